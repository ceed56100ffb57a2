"""The NIST AI RMF 1.0 catalog is complete and the evidence map never over-claims."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from audits.nist import (
    CATALOG_RESOURCE,
    Attested,
    CatalogError,
    Evidence,
    EvidenceKind,
    Status,
    load_catalog,
    map_catalog,
)
from tests.conftest import ROOT

# AI RMF 1.0 Core: categories and their subcategory counts (NIST AI 100-1, Tables 1 to 4).
EXPECTED = {
    "GOVERN": {1: 7, 2: 3, 3: 2, 4: 3, 5: 2, 6: 2},
    "MAP": {1: 6, 2: 3, 3: 5, 4: 2, 5: 2},
    "MEASURE": {1: 3, 2: 13, 3: 3, 4: 3},
    "MANAGE": {1: 4, 2: 4, 3: 2, 4: 3},
}


def expected_ids() -> list[str]:
    return [
        f"{function} {category}.{number}"
        for function, categories in EXPECTED.items()
        for category, count in categories.items()
        for number in range(1, count + 1)
    ]


def test_catalog_has_exactly_the_72_subcategories_in_order() -> None:
    catalog = load_catalog()
    ids = [item.id for item in catalog.subcategories]
    assert len(ids) == len(set(ids)) == 72
    assert all(re.fullmatch(r"(GOVERN|MAP|MEASURE|MANAGE) [1-6]\.(1[0-3]|[1-9])", i) for i in ids)
    assert Counter(i.split()[0] for i in ids) == {
        "GOVERN": 19,
        "MAP": 18,
        "MEASURE": 22,
        "MANAGE": 13,
    }
    assert ids == expected_ids()
    assert catalog.version and catalog.framework_version == "1.0"


def test_summaries_are_paraphrases_not_nist_text() -> None:
    summaries = {item.id: item.summary for item in load_catalog().subcategories}
    # Two of NIST's own sentences: the catalog words things its own way.
    assert summaries["GOVERN 1.1"] != (
        "Legal and regulatory requirements involving AI are understood, managed, and documented."
    )
    assert "Privacy risk of the AI system" not in summaries["MEASURE 2.10"]
    assert all(len(s) >= 20 for s in summaries.values())


def test_crosswalk_names_the_articles_and_controls_it_may() -> None:
    catalog = load_catalog()
    articles = {a for item in catalog.subcategories for a in item.crosswalk.eu_ai_act}
    controls = {c for item in catalog.subcategories for c in item.crosswalk.iso_42001}
    # Every article a provider of a high-risk system meets is cited somewhere.
    provider = {f"Art. {n}" for n in (9, 10, 11, 12, 13, 14, 15, 17, 72, 73)}
    assert provider <= articles <= provider | {"Art. 20", "Art. 26"}
    assert all(item.crosswalk.eu_ai_act for item in catalog.subcategories)
    # Art. 12 is logging by the deployed system: cited for production monitoring only,
    # never for the pipeline's own audit log.
    cites_12 = {item.id for item in catalog.subcategories if "Art. 12" in item.crosswalk.eu_ai_act}
    assert cites_12 == {"MEASURE 2.4", "MANAGE 4.1"}
    assert {"A.6.2.7", "A.6.2.8", "A.7.4", "A.7.5"} <= controls


def test_the_four_overclaimed_rows_need_a_person() -> None:
    rules = {item.id: item.evidence for item in load_catalog().subcategories}
    for subcategory in ("MEASURE 2.5", "MEASURE 2.8", "MEASURE 2.10", "MEASURE 2.11"):
        assert rules[subcategory].needs_person, subcategory
        assert "attestation" in rules[subcategory].evidenced_when()
    fully = sorted(i for i, rule in rules.items() if not rule.needs_person)
    assert fully == ["MAP 2.1", "MEASURE 2.1"]
    assert rules["MAP 2.1"].evidenced_when() == (
        "evidenced when all of model_card, training_record exist and pass"
    )


def test_catalog_ships_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["audits"]
    assert any(fnmatch.fnmatch(CATALOG_RESOURCE, pattern) for pattern in patterns)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc["subcategories"].append(doc["subcategories"][0]), "duplicate"),
        (lambda doc: doc["subcategories"][0].update(id="GOVERN 1"), "id"),
        (lambda doc: doc["subcategories"].reverse(), "framework order"),
        (
            lambda doc: doc["subcategories"][0]["evidence"].update(coverage=None),
            "coverage",
        ),
        (
            lambda doc: doc["subcategories"][0]["evidence"].update(kinds=["telemetry"]),
            "kinds",
        ),
    ],
)
def test_a_broken_catalog_is_refused_naming_the_field(tmp_path: Path, change, message) -> None:
    doc = json.loads((ROOT / "audits" / CATALOG_RESOURCE).read_text())
    change(doc)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def all_evidence(root: Path, passed: bool = True) -> dict[EvidenceKind, Evidence]:
    evidence = {}
    for kind in EvidenceKind:
        (root / f"{kind.value}.json").write_text("{}")
        evidence[kind] = Evidence.at(root, kind, [f"{kind.value}.json"], passed=passed)
    return evidence


def by_id(rows) -> dict:
    return {row.id: row for row in rows}


def test_status_follows_the_evidence(tmp_path: Path) -> None:
    catalog = load_catalog()
    everything = by_id(map_catalog(catalog, all_evidence(tmp_path)))
    # Measured is not examined: without a person's attestation these stay partial.
    assert everything["MEASURE 2.10"].status is Status.PARTIAL
    assert everything["MEASURE 2.10"].evidence == (
        "empirical_privacy.json",
        "privacy_accounting.json",
        "privacy_budget.json",
    )
    assert everything["MEASURE 2.11"].status is Status.PARTIAL
    assert everything["MAP 2.1"].status is Status.EVIDENCED
    assert everything["GOVERN 1.1"].status is Status.PARTIAL
    assert everything["GOVERN 2.2"].status is Status.ATTESTATION_REQUIRED
    assert everything["GOVERN 2.2"].evidence == ()
    assert everything["MANAGE 3.2"].status is Status.NOT_APPLICABLE

    # One kind failing downgrades what it fully covered, and says why.
    evidence = all_evidence(tmp_path)
    evidence[EvidenceKind.PRIVACY_BUDGET] = Evidence.at(
        tmp_path,
        EvidenceKind.PRIVACY_BUDGET,
        ["privacy_budget.json"],
        passed=False,
        detail="its gate failed",
    )
    row = by_id(map_catalog(catalog, evidence))["MEASURE 2.1"]
    evidence[EvidenceKind.MANIFEST] = Evidence.at(
        tmp_path, EvidenceKind.MANIFEST, ["manifest.json"], passed=False, detail="its gate failed"
    )
    assert row.status is Status.EVIDENCED
    row = by_id(map_catalog(catalog, evidence))["MEASURE 2.1"]
    assert row.status is Status.PARTIAL
    assert "manifest (its gate failed)" in row.note
    assert "manifest.json" not in row.evidence
    row = by_id(map_catalog(catalog, evidence))["MEASURE 2.10"]
    assert "privacy_budget (its gate failed)" in row.note

    nothing = by_id(map_catalog(catalog, {}))
    assert {row.status for row in nothing.values()} == {Status.ATTESTATION_REQUIRED}


def test_an_attestation_completes_a_row_only_with_its_evidence(tmp_path: Path) -> None:
    catalog = load_catalog()
    signed = {
        subcategory: Attested(subcategory, f"attestations/{n}.dsse.json", "olivia", "reviewer", "t")
        for n, subcategory in enumerate(["MEASURE 2.11", "GOVERN 2.2", "MAP 2.1"])
    }
    rows = by_id(map_catalog(catalog, all_evidence(tmp_path), signed))
    assert rows["MEASURE 2.11"].status is Status.EVIDENCED
    assert rows["MEASURE 2.11"].attested_by == "olivia (reviewer), t"
    assert rows["GOVERN 2.2"].status is Status.ATTESTED and rows["GOVERN 2.2"].evidence == ()
    # Fully evidenced by rule: an attestation adds nothing and is not shown.
    assert rows["MAP 2.1"].attested_by is None
    # The pipeline's part failed: a person's word does not make up for it.
    evidence = all_evidence(tmp_path, passed=False)
    rows = by_id(map_catalog(catalog, evidence, signed))
    assert rows["MEASURE 2.11"].status is Status.ATTESTATION_REQUIRED
    assert by_id(map_catalog(catalog, {}))["GOVERN 2.2"].status is Status.ATTESTATION_REQUIRED


def test_never_evidenced_without_an_existing_artifact(tmp_path: Path) -> None:
    evidence = all_evidence(tmp_path)
    (tmp_path / "fairness.json").unlink()
    evidence[EvidenceKind.FAIRNESS] = Evidence.at(
        tmp_path, EvidenceKind.FAIRNESS, ["fairness.json"], passed=True
    )
    assert not evidence[EvidenceKind.FAIRNESS].passed
    assert evidence[EvidenceKind.FAIRNESS].detail == "missing: fairness.json"
    rows = map_catalog(load_catalog(), evidence)
    assert by_id(rows)["MEASURE 2.11"].status is Status.ATTESTATION_REQUIRED
    for row in rows:
        assert all((tmp_path / path).exists() for path in row.evidence)
        if row.status in (Status.EVIDENCED, Status.PARTIAL):
            assert row.evidence
