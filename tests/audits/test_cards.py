"""Model card, datasheet and Croissant metadata are written from evidence, and escape input."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import mlcroissant as mlc
import pytest

from audits.cards import DATASHEET_SECTIONS, MODEL_CARD_SECTIONS, ModelFacts, datasheet, model_card
from audits.croissant import RAI_KEYS, TRAINED_RAI_KEYS, CroissantFacts, croissant
from audits.identity import AiActClassification, DataProtection, ModelIdentity
from tests.audits.evidence import EVIL, POLICY_DOCS, metrics, provenance

PRIVACY = {
    "epsilon": 2.6690346,
    "delta": 1e-6,
    "noise_multiplier": 0.9594,
    "steps": 336,
    "max_grad_norm": 10.0,
    "precision": "bf16",
    "accountant": "prv",
    "budget": {"lifetime_epsilon": 10.0, "spent_epsilon": 2.6690346},
}
SPLIT = {
    "dataset": "survey",
    "strategy": "group",
    "seed": 7,
    "group_column": "pid",
    "rows": {"train": 2, "test": 1},
    "dropped_rows": 0,
}


def facts(**changes) -> ModelFacts:
    dataset = provenance()
    derived = provenance(
        "survey.train",
        parents=[{"name": "survey", "sha256": "ab" * 32, "license": "CC-BY-4.0"}],
        produced_by="split",
        sha256="cd" * 32,
        rows=2,
    )
    values = {
        "dataset": dataset,
        "train": derived,
        "test": derived | {"name": "survey.test", "rows": 1},
        "split": SPLIT,
        "model": {
            "config": {"hidden": [64, 64], "activation": "relu"},
            "feature_names": ["score", "age"],
        },
        "model_sha256": "ef" * 32,
        "privacy": PRIVACY,
        "metrics": metrics(PRIVACY["epsilon"], PRIVACY["delta"]),
        "checks": {
            "findings": [
                {
                    "type": "target_leakage",
                    "severity": "warning",
                    "detail": "score alone predicts label",
                }
            ],
            "waived": {},
        },
        "intended_use": "research",
        "git_commit": "1" * 40,
        "identity": ModelIdentity(**POLICY_DOCS["model"]),
        "data_protection": DataProtection(**POLICY_DOCS["data_protection"]),
        "classification": AiActClassification(**POLICY_DOCS["ai_act_classification"]),
        "spent_epsilon": 3.2912,
        "lifetime_epsilon": 10.0,
    }
    return ModelFacts(**(values | changes))


def headings(markdown: str) -> list[str]:
    return re.findall(r"^## \d+\. (.+)$", markdown, flags=re.MULTILINE)


def test_model_card_has_the_nine_sections_filled_from_evidence() -> None:
    card = model_card(facts())
    assert headings(card) == list(MODEL_CARD_SECTIONS)
    assert "epsilon 2.669 at delta 1e-06" in card  # from privacy.json
    assert "| roc_auc | 0.7350 | 0.5000 |" in card  # from metrics.json, next to the baseline
    # The spent budget is the ledger's (every run), not the train stage's 2.669.
    assert "lifetime budget is 10 with epsilon 3.2912 spent" in card
    assert "2.6690 spent" not in card and "2.669 spent" not in card
    for fact in (
        "Version 1.2.0",
        "data-team@example.invalid",
        "Intended users: analysts",
        "Out of scope: decisions about individuals",
        "EU AI Act: high risk",
        "Population: adults answering",
        "DPIA: DPIA-2020-07",
        "Retention: five years",
    ):
        assert fact in card, fact
    assert "0.8044 [" in card and "**model below baseline**" in card
    assert "`age`" in card and "Used as model inputs: `age`" in card
    assert "score alone predicts label" in card  # a check finding becomes a caveat
    assert "ef" * 32 in card and "1" * 40 in card
    assert "TODO" not in card and "lorem" not in card.lower()


def test_model_card_without_metrics_says_what_is_missing() -> None:
    card = model_card(facts(metrics=None))
    assert headings(card) == list(MODEL_CARD_SECTIONS)
    assert "not measured: reports/metrics.json is missing" in card
    assert "do not release" in card


def test_datasheet_has_the_seven_sections_filled_from_provenance() -> None:
    sheet = datasheet(
        provenance(),
        validation={
            "suites": [
                {"suite": "survey.schema", "dataset": "survey", "evaluated": 9, "successful": 9}
            ]
        },
        split=SPLIT,
        croissant_path="reports/croissant/survey.json",
    )
    assert headings(sheet) == list(DATASHEET_SECTIONS)
    assert "3 rows, 5 columns." in sheet
    assert "License: `CC-BY-4.0`; obligations: attribution." in sheet
    assert "9 of 9 expectations met" in sheet
    assert "train 2 rows, test 1 rows" in sheet
    assert "`spent`" in sheet and "never trained on" in sheet


def test_markdown_escapes_metadata() -> None:
    for document in (
        model_card(facts()),
        datasheet(provenance(), validation={}, split=None, croissant_path="x.json"),
    ):
        assert "<script>" not in document and "<img" not in document
        assert "&lt;script&gt;" in document


def test_croissant_validates_with_mlcroissant_and_reads_the_rows(tmp_path: Path) -> None:
    record = provenance()
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "survey.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([c["name"] for c in record["columns"]])
        writer.writerows([[1, 30.5, 0.1, 12.0, 1], [2, 41.0, 0.7, 0.0, 0], [3, 52.5, 0.3, 3.5, 1]])
    # mlcroissant checks the file against the SHA-256 that provenance recorded.
    record["sha256"] = hashlib.sha256((tmp_path / "data" / "survey.csv").read_bytes()).hexdigest()
    metadata = croissant(record, "../data/survey.csv")
    assert set(RAI_KEYS) <= metadata.keys()
    assert "age (age)" in metadata["rai:personalSensitiveInformation"]
    (tmp_path / "croissant").mkdir()
    path = tmp_path / "croissant" / "survey.json"
    path.write_text(json.dumps(metadata))
    dataset = mlc.Dataset(jsonld=path)
    assert not dataset.metadata.issues.errors
    # Nothing missing, not even the recommended datePublished and version.
    assert not dataset.metadata.issues.warnings, dataset.metadata.issues.warnings
    assert metadata["version"] == f"1.0.0+sha256.{record['sha256'][:16]}"
    rows = list(dataset.records("survey"))
    assert len(rows) == 3 and rows[1]["survey/age"] == pytest.approx(41.0)
    assert EVIL in metadata["description"]  # JSON carries text verbatim; pages escape it


def test_croissant_of_the_trained_dataset_carries_the_rai_facts(tmp_path: Path) -> None:
    record = provenance()
    facts = CroissantFacts(
        data_protection=DataProtection(
            **POLICY_DOCS["data_protection"], collected_from="2019-01-01", collected_to="2020-12-31"
        ),
        metrics=metrics(2.669, 1e-6),
        spent_epsilon=3.2912,
        lifetime_epsilon=10.0,
        delta=1e-6,
    )
    metadata = croissant(record, "../data/survey.csv", facts)
    assert set(TRAINED_RAI_KEYS) <= metadata.keys()
    assert metadata["rai:dataCollectionTimeframe"] == ["2019-01-01", "2020-12-31"]
    assert (
        "black: 6 of 2998 test rows hold fractional (imputed) values"
        in (metadata["rai:dataImputationProtocol"])
    )
    impact = metadata["rai:dataSocialImpact"]
    assert "adults answering the 2020 survey" in impact and "DPIA-2020-07" in impact
    assert "spent epsilon 3.2912 of its lifetime budget 10" in impact
    # The data's biases, not the model's: the label's base rate by group.
    assert (
        "Base rate of the label by black (test split): 0 0.816 (2428 rows)"
        in (metadata["rai:dataBiases"])
    )
    path = tmp_path / "survey.json"
    path.write_text(json.dumps(metadata))
    issues = mlc.Metadata.from_file(ctx=mlc.Context(), file=path).ctx.issues
    assert not issues.errors and not issues.warnings, issues.report()


def test_datasheet_states_population_period_basis_and_retention_where_policy_gives_them() -> None:
    protection = DataProtection(**POLICY_DOCS["data_protection"])
    sheet = datasheet(
        provenance(), validation={}, split=SPLIT, croissant_path="x.json", protection=protection
    )
    for fact in (
        "Population: adults answering the 2020 survey",
        "Period: 2019-2020",
        "Lawful basis: GDPR Art. 6(1)(e)",
        "DPIA: DPIA-2020-07",
        "Retention: five years after the study ends",
    ):
        assert fact in sheet, fact
    other = datasheet(provenance(), validation={}, split=None, croissant_path="x.json")
    assert "Population: not recorded" in other
