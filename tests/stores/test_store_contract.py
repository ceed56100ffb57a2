"""The store contract, one set of test bodies run on both backends (local files, PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from privacy.accounting import AccountantKind, SgdSteps, epsilon_of
from privacy.errors import BudgetExceeded
from privacy.ledger import PrivacyLedger
from stores.local import GENESIS, sha256_hex
from stores.select import open_stream
from tests.stores.records import link

DATA = "ab" * 32
SIGMA, Q, DELTA = 1.1, 0.01, 1e-5


def _record(value: str):
    def build(seq: int, prev: str) -> bytes:
        return json.dumps({"prev": prev, "seq": seq, "value": value}, sort_keys=True).encode()

    return build


def _chain(raw: bytes) -> list[dict]:
    """The records of ``raw``, checked against an independent re-derivation of the chain."""
    records, prev = [], GENESIS
    for seq, line in enumerate(raw.split(b"\n")[:-1]):
        record = json.loads(line)
        assert (record["seq"], record["prev"]) == (seq, prev)
        records.append(record)
        prev = sha256_hex(line)
    return records


def _stream(directory: Path):
    return open_stream(directory / "events.jsonl", link, lock_timeout=30)


def test_a_new_stream_is_empty(store_dir: Path) -> None:
    with _stream(store_dir).session() as session:
        assert session.snapshot().raw == b""


def test_appends_chain_and_persist_across_sessions(store_dir: Path) -> None:
    with _stream(store_dir).session() as session:
        session.snapshot()
        lines = session.append([_record("a"), _record("b")])
    with _stream(store_dir).session() as session:
        session.append([_record("c")])
    with _stream(store_dir).session() as session:
        raw = session.snapshot().raw
    assert raw.startswith(b"\n".join(lines) + b"\n")
    assert [r["value"] for r in _chain(raw)] == ["a", "b", "c"]


def _append_many(directory: Path, worker: int, count: int) -> None:
    stream = _stream(directory)
    for index in range(count):
        with stream.session() as session:
            session.append([_record(f"{worker}-{index}")])


def test_concurrent_writers_neither_lose_nor_fork(store_dir: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(store_dir, w, 15)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    with _stream(store_dir).session() as session:
        records = _chain(session.snapshot().raw)
    assert sorted(r["value"] for r in records) == sorted(
        f"{w}-{i}" for w in range(4) for i in range(15)
    )


# The privacy ledger on each backend: same bodies.


def test_ledger_reservations_and_spend(store_dir: Path) -> None:
    ledger = PrivacyLedger(store_dir / "privacy-ledger.jsonl")
    run = ledger.open_run(DATA, "run-1", SIGMA, Q, AccountantKind.RDP, DELTA)
    run.record_steps(50)
    run.record_steps(120)
    fresh = PrivacyLedger(store_dir / "privacy-ledger.jsonl")
    assert fresh.history(DATA) == [SgdSteps(SIGMA, Q, 120)]
    assert fresh.verify().records == 3
    expected = epsilon_of([SgdSteps(SIGMA, Q, 120)], DELTA, AccountantKind.RDP)
    assert fresh.spent(DATA, DELTA, AccountantKind.RDP) == pytest.approx(expected)


def test_ledger_resume_keeps_the_count(store_dir: Path) -> None:
    path = store_dir / "privacy-ledger.jsonl"
    PrivacyLedger(path).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA).record_steps(40)
    resumed = PrivacyLedger(path).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA)
    assert resumed.steps == 40


def test_ledger_refuses_a_reservation_over_the_lifetime_budget(store_dir: Path) -> None:
    path = store_dir / "privacy-ledger.jsonl"
    one = epsilon_of([SgdSteps(SIGMA, Q, 100)], DELTA, AccountantKind.RDP)
    first = PrivacyLedger(path).open_run(DATA, "a", SIGMA, Q, "rdp", DELTA, lifetime_epsilon=one)
    first.record_steps(100)
    second = PrivacyLedger(path).open_run(DATA, "b", SIGMA, Q, "rdp", DELTA, lifetime_epsilon=one)
    with pytest.raises(BudgetExceeded):
        second.record_steps(10)
    assert PrivacyLedger(path).history(DATA) == [SgdSteps(SIGMA, Q, 100), SgdSteps(SIGMA, Q, 0)]
