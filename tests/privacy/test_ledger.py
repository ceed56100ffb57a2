"""The per-dataset privacy budget ledger: composition, refusal, durability, tampering."""

import hashlib
import json
import multiprocessing
import stat
import time
from pathlib import Path

import pytest

from privacy.accounting import AccountantKind, SgdSteps, epsilon_of
from privacy.errors import BudgetExceeded, PrivacyError, PrivacyInputError
from privacy.ledger import LedgerCorrupted, PrivacyLedger

DATA = "ab" * 32
OTHER = "cd" * 32
DELTA = 1e-5
SIGMA, Q = 1.1, 0.01
LEGACY = Path(__file__).resolve().parents[1] / "stores" / "legacy"


@pytest.fixture
def ledger(tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(tmp_path / ".custodian" / "privacy-ledger.jsonl")


def _run(ledger: PrivacyLedger, run_id: str, steps: int, dataset: str = DATA) -> None:
    handle = ledger.open_run(dataset, run_id, SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(steps)


def _lines(ledger: PrivacyLedger) -> list[bytes]:
    return ledger.path.read_bytes().splitlines(keepends=True)


def test_spend_composes_runs_and_is_less_than_the_sum(ledger: PrivacyLedger) -> None:
    _run(ledger, "first", 400)
    _run(ledger, "second", 600)
    _run(ledger, "elsewhere", 5000, dataset=OTHER)
    first = epsilon_of([SgdSteps(SIGMA, Q, 400)], DELTA)
    second = epsilon_of([SgdSteps(SIGMA, Q, 600)], DELTA)

    spent = ledger.spent(DATA, DELTA, AccountantKind.PRV)

    assert max(first, second) < spent < first + second
    both = [SgdSteps(SIGMA, Q, 400), SgdSteps(SIGMA, Q, 600)]
    assert spent == epsilon_of(both, DELTA, AccountantKind.PRV)


def test_over_budget_run_is_refused_before_it_starts(ledger: PrivacyLedger) -> None:
    _run(ledger, "first", 1000)
    spent = ledger.spent(DATA, DELTA, AccountantKind.RDP)
    planned = SgdSteps(SIGMA, Q, 1000)

    with pytest.raises(BudgetExceeded) as refused:
        ledger.check_budget(DATA, planned, 2.0, DELTA, AccountantKind.RDP)

    message = str(refused.value)
    assert "\n" not in message
    assert f"dataset {DATA[:12]}" in message
    assert f"spent epsilon {spent:.4g}" in message
    planned_alone = epsilon_of([planned], DELTA, AccountantKind.RDP)
    assert f"planned {planned_alone:.4g} (alone)" in message
    total = epsilon_of([SgdSteps(SIGMA, Q, 1000), planned], DELTA, AccountantKind.RDP)
    assert f"composes to {total:.4g} > lifetime 2 " in message


def test_budget_check_passes_with_the_numbers(ledger: PrivacyLedger) -> None:
    _run(ledger, "first", 100)
    check = ledger.check_budget(DATA, SgdSteps(SIGMA, Q, 100), 10.0, DELTA, AccountantKind.RDP)
    assert check.spent_epsilon == pytest.approx(check.planned_epsilon)
    assert check.spent_epsilon < check.total_epsilon <= 10.0


def test_reservation_beyond_lifetime_is_refused_and_not_written(ledger: PrivacyLedger) -> None:
    _run(ledger, "other", 1000)
    handle = ledger.open_run(
        DATA, "capped", SIGMA, Q, AccountantKind.RDP, DELTA, lifetime_epsilon=2.0
    )
    handle.record_steps(100)
    size = ledger.path.stat().st_size

    with pytest.raises(BudgetExceeded, match="lifetime 2 "):
        handle.record_steps(5000)

    assert ledger.path.stat().st_size == size
    assert handle.steps == 100


def test_resume_continues_the_run(ledger: PrivacyLedger) -> None:
    first = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.PRV, DELTA)
    first.record_steps(100)

    resumed = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.PRV, DELTA)
    resumed.record_steps(resumed.steps + 50)

    assert resumed.steps == 150
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 150)]
    with pytest.raises(PrivacyError, match="re-opened by another process"):
        first.record_steps(200)
    with pytest.raises(PrivacyInputError, match="would under-count"):
        resumed.record_steps(120)


def test_resume_with_other_noise_is_refused(ledger: PrivacyLedger) -> None:
    _run(ledger, "run", 10)
    with pytest.raises(PrivacyInputError, match="resume it with the same values"):
        ledger.open_run(DATA, "run", 2 * SIGMA, Q, AccountantKind.RDP, DELTA)


@pytest.mark.parametrize(
    ("dataset", "run_id", "match"),
    [(DATA.upper(), "run", "dataset_sha256"), ("ab" * 31, "run", "dataset_sha256")]
    + [(DATA, "has space", "run_id"), (DATA, "", "run_id")],
)
def test_malformed_keys_are_refused(
    ledger: PrivacyLedger, dataset: str, run_id: str, match: str
) -> None:
    with pytest.raises(PrivacyInputError, match=match):
        ledger.open_run(dataset, run_id, SIGMA, Q, AccountantKind.RDP, DELTA)


def test_summary_lists_each_dataset(ledger: PrivacyLedger) -> None:
    _run(ledger, "a", 100)
    _run(ledger, "b", 200)
    _run(ledger, "c", 300, dataset=OTHER)

    summary = ledger.summary()

    assert [spend.dataset_sha256 for spend in summary] == [DATA, OTHER]
    assert [run.run_id for run in summary[0].runs] == ["a", "b"]
    assert summary[0].steps == 300
    assert summary[0].accountant == "rdp"
    expected = epsilon_of([SgdSteps(SIGMA, Q, 100), SgdSteps(SIGMA, Q, 200)], DELTA, "rdp")
    assert summary[0].spent_epsilon == expected
    assert json.loads(json.dumps([spend.to_json() for spend in summary]))[1]["steps"] == 300


def _writer(path: Path, run_id: str, go: Path) -> None:
    handle = PrivacyLedger(path).open_run(DATA, run_id, SIGMA, Q, AccountantKind.RDP, DELTA)
    while not go.exists():
        time.sleep(0.01)
    for step in range(1, 51):
        handle.record_steps(step)


def test_concurrent_writers_lose_nothing(ledger: PrivacyLedger, tmp_path: Path) -> None:
    # fork: the children inherit the imported modules instead of re-importing torch.
    context = multiprocessing.get_context("fork")
    go = tmp_path / "go"
    writers = [
        context.Process(target=_writer, args=(ledger.path, f"worker-{i}", go)) for i in range(4)
    ]
    for writer in writers:
        writer.start()
    _wait_for_opens(ledger, 4)
    go.touch()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0

    status = ledger.verify()

    assert status.records == 4 + 4 * 50
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 50)] * 4
    records = [json.loads(line) for line in _lines(ledger)]
    for i in range(4):
        counts = [r["steps"] for r in records if r["run_id"] == f"worker-{i}"]
        assert counts == list(range(51))


def _wait_for_opens(ledger: PrivacyLedger, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ledger.path.exists() and len(_lines(ledger)) >= count:
            return
        time.sleep(0.05)
    pytest.fail("the writer processes did not open their runs")


def test_edited_middle_line_is_detected(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    for steps in (10, 20, 30):
        handle.record_steps(steps)
    lines = _lines(ledger)
    lines[1] = lines[1].replace(b'"steps":10', b'"steps":1')
    ledger.path.write_bytes(b"".join(lines))

    with pytest.raises(
        LedgerCorrupted, match="line 3: prev hash does not match the record on line 2"
    ):
        ledger.verify()
    with pytest.raises(LedgerCorrupted):
        handle.record_steps(40)
    assert ledger.path.read_bytes() == b"".join(lines)


def test_deleted_middle_line_is_detected(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    for steps in (10, 20, 30):
        handle.record_steps(steps)
    lines = _lines(ledger)
    ledger.path.write_bytes(b"".join(lines[:1] + lines[2:]))

    with pytest.raises(LedgerCorrupted, match="line 2: sequence number 2, expected 1"):
        ledger.verify()


def test_garbled_middle_line_is_not_mistaken_for_a_torn_tail(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    for steps in (10, 20, 30):
        handle.record_steps(steps)
    lines = _lines(ledger)
    lines[1] = b"garbage\n"
    ledger.path.write_bytes(b"".join(lines))

    with pytest.raises(LedgerCorrupted, match="line 2: not a ledger record"):
        ledger.verify()


def test_torn_tail_is_reported_then_set_aside_and_recorded(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    intact = ledger.path.read_bytes()
    fragment = b'{"accountant":"rdp","dataset_sha'
    ledger.path.write_bytes(intact + fragment)

    torn = ledger.verify().torn_tail
    assert torn is not None
    assert (torn.offset, torn.length, torn.line) == (len(intact), len(fragment), 3)
    assert "32 unreadable bytes at offset" in torn.describe()
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 100)]

    handle.record_steps(200)

    status = ledger.verify()
    assert (status.torn_tail, status.recoveries, status.records) == (None, 1, 4)
    # The store's one rule: the bytes moved aside (0600), the recovery names them where
    # it starts, and the ledger holds only records.
    aside = ledger.path.with_name(ledger.path.name + ".torn-1")
    assert aside.read_bytes() == fragment
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    recovery = json.loads(_lines(ledger)[2])
    assert recovery["event"] == "recovery"
    assert recovery["torn"] == {
        "offset": len(intact),
        "length": len(fragment),
        "sha256": hashlib.sha256(fragment).hexdigest(),
    }
    assert ledger.path.read_bytes().startswith(intact + _lines(ledger)[2])
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 200)]


def test_crash_while_recovering_is_recovered_too(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    with ledger.path.open("ab") as file:
        file.write(b'{"accountant":"rd')
    handle.record_steps(200)
    # Replay a crash in the middle of that recovery's write: the recovery record made it,
    # the reservation after it is torn. Its steps were never acknowledged, so never taken.
    lines = _lines(ledger)
    ledger.path.write_bytes(b"".join(lines[:3]) + lines[3][:40])

    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 100)]
    handle.record_steps(300)

    status = ledger.verify()
    assert (status.torn_tail, status.recoveries) == (None, 2)
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 300)]
    assert ledger.path.with_name(ledger.path.name + ".torn-2").read_bytes() == lines[3][:40]


def test_complete_last_record_without_newline_was_never_acknowledged(
    ledger: PrivacyLedger,
) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    handle.record_steps(150)
    ledger.path.write_bytes(ledger.path.read_bytes().rstrip(b"\n"))

    # record_steps returns only once the newline is on disk: 150 was never taken.
    torn = ledger.verify().torn_tail
    assert torn is not None and torn.line == 3
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 100)]
    handle.record_steps(200)
    assert ledger.verify().records == 4  # open, 100, recovery, 200


def test_two_damaged_lines_at_the_end_are_not_taken_for_a_crash(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    before = ledger.path.read_bytes() + b'{"accountant":"rd\n{"event":"recov'
    ledger.path.write_bytes(before)

    with pytest.raises(LedgerCorrupted, match="last two lines .* are damaged"):
        handle.record_steps(200)
    assert ledger.path.read_bytes() == before
    assert not ledger.path.with_name(ledger.path.name + ".torn-1").exists()


def test_recovery_that_names_other_bytes_is_detected(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    with ledger.path.open("ab") as file:
        file.write(b'{"accountant":"rdp"')
    handle.record_steps(200)
    # Move the recovery record one line down: it no longer starts where the bytes were cut.
    lines = _lines(ledger)
    ledger.path.write_bytes(b"".join([lines[0], b"{}x\n", *lines[1:]]))

    with pytest.raises(LedgerCorrupted):
        ledger.verify()


def test_ledger_with_an_old_in_place_recovery_still_verifies(ledger: PrivacyLedger) -> None:
    # Written by the ledger before the shared store: torn bytes left in place, terminated,
    # and claimed by the recovery record after them.
    legacy = (LEGACY / "privacy-ledger-in-place-recovery.jsonl").read_bytes()
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_bytes(legacy)

    status = ledger.verify()
    assert (status.records, status.recoveries, status.torn_tail) == (4, 1, None)
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 200)]
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(300)
    assert ledger.path.read_bytes().startswith(legacy)
    assert ledger.history(DATA) == [SgdSteps(SIGMA, Q, 300)]

    edited = legacy.replace(
        b'{"accountant":"rdp","dataset_sha\n', b'{"accountant":"rdp","dataset_shX\n'
    )
    ledger.path.write_bytes(edited)
    with pytest.raises(LedgerCorrupted, match="recovery record does not match"):
        ledger.verify()


def test_deleted_ledger_stops_an_open_run(ledger: PrivacyLedger) -> None:
    handle = ledger.open_run(DATA, "run", SIGMA, Q, AccountantKind.RDP, DELTA)
    handle.record_steps(100)
    ledger.path.unlink()

    with pytest.raises(PrivacyError, match="missing from privacy ledger"):
        handle.record_steps(200)
