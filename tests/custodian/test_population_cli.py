"""A budget that follows people through ``custodian data add``: versions inherit the
population, overlapping identifiers must name it, and all their runs share one spend."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from privacy.accounting import AccountantKind, SgdSteps, epsilon_of
from privacy.errors import BudgetExceeded
from privacy.ledger import PrivacyLedger
from tests.conftest import custodian

PEOPLE = "clinic-patients"
V1 = "id,year,age,y\n1,2020,30,0\n1,2021,31,1\n2,2020,40,1\n3,2021,50,0\n4,2020,22,1\n"
V2 = V1 + "5,2021,61,0\n"  # the same dataset, one row added
# Another dataset about half of the same people (ids 1 and 3 of 1, 3, 8, 9), ids as floats.
VISITS = "pid,visit,y\n1.0,2022,1\n3.0,2022,0\n8.0,2022,1\n9.0,2022,0\n"


def add(repo: Path, name: str, *extra: str):
    return custodian(
        "data", "add", f"datasets/{name}", "--license", "CC-BY-4.0",
        "--source", f"https://example.org/{name}", "--label", "y", *extra, cwd=repo,
    )  # fmt: skip


def meta(repo: Path, name: str) -> dict:
    return yaml.safe_load((repo / f"datasets/{name}.dvc").read_text())["meta"]["custodian"]


@pytest.mark.slow
def test_versions_and_overlapping_datasets_share_one_population_budget(project: Path):
    (project / "datasets/clinic.csv").write_text(V1)
    assert add(project, "clinic.csv", "--identifier", "id", "--population", PEOPLE).returncode == 0
    first = meta(project, "clinic.csv")
    assert first["population"] == PEOPLE

    (project / "datasets/clinic.csv").write_text(V2)
    result = add(project, "clinic.csv", "--identifier", "id")
    assert result.returncode == 0, result.stderr
    second = meta(project, "clinic.csv")
    assert second["population"] == PEOPLE and second["sha256"] != first["sha256"]

    (project / "datasets/visits.csv").write_text(VISITS)
    refused = add(project, "visits.csv", "--identifier", "pid")
    assert refused.returncode == 2
    assert f"2 identifier value(s) also appear in dataset 'clinic' of population {PEOPLE!r}" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert not (project / "datasets/visits.csv.dvc").exists()
    metadata = (project / "datasets/clinic.csv.dvc").read_text()
    # No identifier digests are stored: the only 64-hex values are the file hashes.
    assert set(re.findall(r"[0-9a-f]{64}", metadata)) == {second["sha256"]}
    # Naming another population is a declaration (ids of unrelated data can coincide),
    # accepted with a warning that names the overlap.
    (project / "datasets/lookalike.csv").write_text(VISITS)
    declared = add(project, "lookalike.csv", "--identifier", "pid", "--population", "others")
    assert declared.returncode == 0, declared.stderr
    assert "warning:" in declared.stderr and f"population {PEOPLE!r}" in declared.stderr
    accepted = add(project, "visits.csv", "--identifier", "pid", "--population", PEOPLE)
    assert accepted.returncode == 0, accepted.stderr
    visits = meta(project, "visits.csv")

    # Runs keyed as the train stage keys them: the dataset's hash and its population.
    ledger = PrivacyLedger(project / ".custodian/privacy-ledger.jsonl")
    kind, delta = AccountantKind.PRV, 1e-5
    history = []
    for run_id, record in (("v1", first), ("v2", second), ("visits", visits)):
        run = ledger.open_run(
            record["sha256"], run_id, 1.1, 0.05, kind, delta, population=record["population"]
        )
        run.record_steps(300)
        history.append(SgdSteps(1.1, 0.05, 300))
    spent = ledger.spent(visits["sha256"], delta, kind, PEOPLE)
    assert spent == pytest.approx(epsilon_of(history, delta, kind))
    planned = SgdSteps(1.1, 0.05, 300)
    with pytest.raises(BudgetExceeded) as refusal:
        ledger.check_budget(second["sha256"], planned, spent * 1.05, delta, kind, PEOPLE)
    message = str(refusal.value)
    for part in (f"population {PEOPLE!r}", f"spent epsilon {spent:.4g}", "planned", "lifetime"):
        assert part in message
