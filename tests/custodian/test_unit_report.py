"""privacy.json's statement of the unit: person level, and record level with its group cost."""

from __future__ import annotations

import pytest
import torch

from custodian.stages.train import unit_report
from privacy.unit import PrivacyUnit, group_privacy
from training.features import EncodedTable

PEOPLE = torch.tensor([1, 1, 1, 2, 3, 3, 4, 4, 4, 4])
TABLE = EncodedTable(torch.zeros(10, 2), torch.zeros(10, dtype=torch.long), ("a", "b"), PEOPLE)


def test_person_level_report_counts_people_rows_and_states_coverage():
    report = unit_report(TABLE, PrivacyUnit.PERSON, "clinic-patients", 2.0, 1e-5)
    assert (report["unit"], report["people"], report["rows"]) == ("person", 4, 10)
    assert report["max_rows_per_person"] == 4 and report["population"] == "clinic-patients"
    assert "group_privacy" not in report
    assert any("early stopping" in item for item in report["covers"]["not_covered"])
    assert any("evaluation metrics" in item for item in report["covers"]["not_covered"])


def test_record_level_report_carries_the_labelled_group_conversion():
    report = unit_report(TABLE, PrivacyUnit.RECORD, None, 2.0, 1e-5)
    group = report["group_privacy"]
    assert report["unit"] == "record" and group["rows"] == 4
    assert "group privacy" in group["label"] and "4 rows" in group["label"]
    expected = group_privacy(2.0, 1e-5, 4)
    assert (group["epsilon"], group["delta"]) == pytest.approx((8.0, expected.delta))


def test_without_an_identifier_the_people_are_unknown():
    anonymous = EncodedTable(TABLE.features, TABLE.labels, TABLE.feature_names)
    report = unit_report(anonymous, PrivacyUnit.RECORD, None, 2.0, 1e-5)
    assert report["people"] is None and report["max_rows_per_person"] is None
    assert "group_privacy" not in report
