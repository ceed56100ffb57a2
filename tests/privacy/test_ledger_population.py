"""The lifetime budget follows people: one spend per population, and old ledgers migrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy.accounting import AccountantKind, SgdSteps, epsilon_of
from privacy.errors import BudgetExceeded, PrivacyInputError
from privacy.ledger import LedgerCorrupted, PrivacyLedger

V1, V2, OTHER, UNRELATED = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
PEOPLE = "clinic-patients"
DELTA = 1e-5
PRV = AccountantKind.PRV
# Keys of a run record before populations existed: such lines must stay byte-identical.
LEGACY_KEYS = {
    "v", "seq", "prev", "time", "event", "dataset_sha256", "run_id", "session",
    "accountant", "delta", "noise_multiplier", "sample_rate", "steps",
}  # fmt: skip


@pytest.fixture
def ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / "ledger.jsonl")


def _run(ledger, run_id, dataset, steps, population=None, sigma=1.0, rate=0.05):
    handle = ledger.open_run(dataset, run_id, sigma, rate, PRV, DELTA, population=population)
    handle.record_steps(steps)
    return SgdSteps(sigma, rate, steps)


def test_runs_on_every_dataset_of_a_population_compose_into_one_spend(ledger):
    first = _run(ledger, "train-v1", V1, 200, PEOPLE)
    second = _run(ledger, "train-v2", V2, 150, PEOPLE, sigma=1.3)
    third = _run(ledger, "train-other", OTHER, 100, PEOPLE)
    unrelated = _run(ledger, "train-x", UNRELATED, 500)
    expected = epsilon_of([first, second, third], DELTA, PRV)
    for dataset in (V1, V2, OTHER):  # any dataset of the population sees the same spend
        assert ledger.spent(dataset, DELTA, PRV, PEOPLE) == pytest.approx(expected)
    assert ledger.spent(V1, DELTA, PRV, PEOPLE) > epsilon_of([first], DELTA, PRV)
    assert ledger.spent(UNRELATED, DELTA, PRV) == pytest.approx(epsilon_of([unrelated], DELTA, PRV))
    by_name = {spend.population: spend for spend in ledger.summary()}
    assert by_name[PEOPLE].datasets == (V1, V2, OTHER)
    assert len(by_name[PEOPLE].runs) == 3 and by_name[None].datasets == (UNRELATED,)
    # Each run keeps its own dataset (audit verify matches runs to the log by it).
    runs = {run.run_id: run.dataset_sha256 for run in by_name[PEOPLE].runs}
    assert runs == {"train-v1": V1, "train-v2": V2, "train-other": OTHER}


def test_over_budget_run_names_population_spent_planned_and_lifetime(ledger):
    _run(ledger, "train-v1", V1, 400, PEOPLE)
    spent = ledger.spent(V2, DELTA, PRV, PEOPLE)
    planned = SgdSteps(1.0, 0.05, 400)
    lifetime = spent * 1.1  # composing 400 more steps adds far more than 10%
    with pytest.raises(BudgetExceeded) as refused:
        ledger.check_budget(V2, planned, lifetime, DELTA, PRV, population=PEOPLE)
    message = str(refused.value)
    assert f"population {PEOPLE!r}" in message
    assert f"spent epsilon {spent:.4g}" in message
    assert f"planned {epsilon_of([planned], DELTA, PRV):.4g}" in message
    assert f"lifetime {lifetime:.4g}" in message
    # The same run on a dataset of nobody's population would have been affordable.
    ledger.check_budget(UNRELATED, planned, lifetime, DELTA, PRV)


def test_a_reservation_is_checked_against_the_population_not_the_dataset(ledger):
    _run(ledger, "train-v1", V1, 400, PEOPLE)
    lifetime = ledger.spent(V1, DELTA, PRV, PEOPLE) * 1.2
    handle = ledger.open_run(
        V2, "train-v2", 1.0, 0.05, PRV, DELTA, lifetime_epsilon=lifetime, population=PEOPLE
    )
    with pytest.raises(BudgetExceeded, match=PEOPLE):
        handle.record_steps(400)


def test_legacy_ledger_migrates_to_the_population_of_its_dataset(ledger):
    # Written as before populations existed: no population on the lines.
    old = _run(ledger, "train-old", V1, 300)
    stray = _run(ledger, "train-stray", UNRELATED, 300)
    lines = ledger.path.read_bytes().splitlines()
    assert all(set(json.loads(line)) == LEGACY_KEYS for line in lines)
    # Before any population run: the old dataset's spend already counts for the population.
    assert ledger.spent(V1, DELTA, PRV, PEOPLE) == pytest.approx(epsilon_of([old], DELTA, PRV))
    new = _run(ledger, "train-new", V2, 100, PEOPLE)
    # Once a population run names V1 too, every dataset of the population sees the old runs.
    _run(ledger, "train-v1-again", V1, 50, PEOPLE)
    spent = ledger.spent(V2, DELTA, PRV, PEOPLE)
    assert spent == pytest.approx(epsilon_of([old, new, SgdSteps(1.0, 0.05, 50)], DELTA, PRV))
    assert spent < epsilon_of([old, new, stray, SgdSteps(1.0, 0.05, 50)], DELTA, PRV)
    assert ledger.verify().records == 8  # the mixed old and new lines verify as one chain
    (summary,) = (s for s in ledger.summary() if s.population == PEOPLE)
    assert {run.run_id for run in summary.runs} == {"train-old", "train-new", "train-v1-again"}


def test_a_run_cannot_change_population_on_resume_or_by_editing(ledger):
    _run(ledger, "train-v1", V1, 10, PEOPLE)
    with pytest.raises(PrivacyInputError, match="population"):
        ledger.open_run(V1, "train-v1", 1.0, 0.05, PRV, DELTA, population="someone-else")
    raw = ledger.path.read_bytes()
    ledger.path.write_bytes(raw.replace(PEOPLE.encode(), b"other-people", 1))
    with pytest.raises(LedgerCorrupted):
        ledger.verify()


@pytest.mark.parametrize("population", ["", "Has Spaces", "x" * 65, 7])
def test_malformed_population_is_refused(ledger, population):
    with pytest.raises(PrivacyInputError, match="population"):
        ledger.spent(V1, DELTA, PRV, population)
