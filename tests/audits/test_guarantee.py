"""The one plain sentence the compliance page and the model card state."""

from __future__ import annotations

from audits.guarantee import guarantee_sentence, not_covered

PERSON = {
    "epsilon": 2.9871,
    "delta": 1e-5,
    "unit": "person",
    "people": 4138,
    "rows": 14132,
    "max_rows_per_person": 5,
    "population": "rand-hie-participants",
    "covers": {"covered": ["weights"], "not_covered": ["early stopping", "test metrics"]},
}


def test_person_level_sentence_states_unit_relation_bound_and_scope():
    sentence = guarantee_sentence(PERSON)
    assert sentence.startswith("Any one participant's records, all together, change the model's")
    for part in ("e^2.987", "probability 1e-05", "all the records of one person",
                 "rand-hie-participants", "4138 people", "14132 rows", "at most 5 rows",
                 "not the validation-based early stopping and hyperparameter choice",
                 "published evaluation metrics"):  # fmt: skip
        assert part in sentence
    assert not_covered(PERSON) == ["early stopping", "test metrics"]


def test_record_level_sentence_carries_the_labelled_group_conversion():
    record = {**PERSON, "unit": "record", "epsilon": 2.67, "delta": 1e-6}
    record["group_privacy"] = {"rows": 5, "epsilon": 13.35, "delta": 0.2175}
    sentence = guarantee_sentence(record)
    assert "Any one record changes" in sentence and "one row" in sentence
    assert "participant's records, all together" not in sentence
    assert "Group-privacy conversion for a person with 5 records" in sentence
    assert "epsilon 13.350 at delta 0.217" in sentence


def test_a_report_without_a_unit_is_not_read_as_person_level():
    legacy = {"epsilon": 1.0, "delta": 1e-6}
    sentence = guarantee_sentence(legacy)
    assert "record-level" in sentence and "group privacy" in sentence
    assert not_covered(legacy) == []
