"""What only the PostgreSQL store promises: races, server-enforced append-only, shared clones,
and a server that goes away. A real server (tests/stores/pgserver.py); nothing mocked."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from privacy.accounting import AccountantKind, SgdSteps, epsilon_of
from privacy.errors import BudgetExceeded
from privacy.ledger import LedgerUnavailable, PrivacyLedger
from stores import config
from stores.errors import StoreError
from stores.postgres import migrate_schema
from tests.stores import pgserver
from tests.stores.conftest import PgProject, new_project

DATA = "cd" * 32
SIGMA, Q, DELTA, STEPS = 1.0, 0.02, 1e-5, 60
WORKERS, FITS = 8, 3


def _ledger(directory: Path) -> PrivacyLedger:
    return PrivacyLedger(directory / "privacy-ledger.jsonl")


def _clone(tmp_path: Path, name: str, project: PgProject, role: str | None = None) -> Path:
    directory = tmp_path / name / ".custodian"
    directory.mkdir(parents=True)
    project.use(directory, role)
    return directory


def _lifetime_fitting(count: int) -> float:
    """A budget that K runs of STEPS fit and K+1 do not (RDP, an independent composition)."""
    run = SgdSteps(SIGMA, Q, STEPS)
    fits = epsilon_of([run] * count, DELTA, AccountantKind.RDP)
    over = epsilon_of([run] * (count + 1), DELTA, AccountantKind.RDP)
    assert fits < over
    return (fits + over) / 2


def _reserve(directory: Path, data: str, run_id: str, lifetime: float, barrier, results) -> None:
    run = _ledger(directory).open_run(data, run_id, SIGMA, Q, "rdp", DELTA, lifetime)
    barrier.wait(30)
    try:
        run.record_steps(STEPS)
        results.put((run_id, True))
    except BudgetExceeded:
        results.put((run_id, False))


@pytest.mark.slow
def test_racing_trainers_never_overspend(pg_project: PgProject, tmp_path: Path) -> None:
    """8 processes, a budget that fits exactly 3 of their reservations: exactly 3 win."""
    lifetime = _lifetime_fitting(FITS)
    directory = _clone(tmp_path, "clone", pg_project)
    ctx = multiprocessing.get_context("fork")
    for repetition in range(20):
        data = f"{repetition:02x}" * 32
        barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
        workers = [
            ctx.Process(
                target=_reserve,
                args=(directory, data, f"r{repetition}-w{i}", lifetime, barrier, results),
            )
            for i in range(WORKERS)
        ]
        for process in workers:
            process.start()
        outcome = dict(results.get(timeout=60) for _ in workers)
        for process in workers:
            process.join(30)
            assert process.exitcode == 0
        assert sum(outcome.values()) == FITS, outcome
        ledger = _ledger(directory)
        assert ledger.spent(data, DELTA, AccountantKind.RDP) <= lifetime
        reserved = sorted(h.steps for h in ledger.history(data))
        assert reserved == [0] * (WORKERS - FITS) + [STEPS] * FITS


def _as(project: PgProject, role: str) -> psycopg.Connection:
    return psycopg.connect(project.url(role), autocommit=True)


def test_the_server_refuses_changes_to_written_records(
    pg_project: PgProject, pg_server: pgserver.Server, tmp_path: Path
) -> None:
    directory = _clone(tmp_path, "clone", pg_project)
    _ledger(directory).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA).record_steps(10)
    statements = [
        "UPDATE custodian.records SET line = 'x'::bytea",
        "DELETE FROM custodian.records",
        "TRUNCATE custodian.records",
    ]
    with _as(pg_project, pg_project.trainer) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # Even the owner (a superuser here) is stopped by the triggers.
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    # The reviewer reads but cannot append.
    with _as(pg_project, pg_project.reviewer) as conn:
        rows = conn.execute("SELECT count(*) FROM custodian.records").fetchone()[0]
        assert rows == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO custodian.records (project, stream, seq, prev, sha256, line) "
                "SELECT project, stream, 2, sha256, sha256, line FROM custodian.records LIMIT 1"
            )
    assert _ledger(directory).verify().records == 2


def test_the_server_refuses_a_forged_or_forking_record(
    pg_project: PgProject, tmp_path: Path
) -> None:
    directory = _clone(tmp_path, "clone", pg_project)
    _ledger(directory).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA)
    with _as(pg_project, pg_project.trainer) as conn:
        for seq, prev in ((0, "0" * 64), (5, "0" * 64), (1, "1" * 64)):
            with pytest.raises(psycopg.Error):
                conn.execute(
                    "INSERT INTO custodian.records (project, stream, seq, prev, sha256, line) "
                    "VALUES (%s, 'privacy-ledger', %s, %s, encode(sha256('x'), 'hex'), 'x')",
                    (pg_project.name, seq, prev),
                )


def test_projects_do_not_see_each_other(pg_server: pgserver.Server, tmp_path: Path) -> None:
    first, second = new_project(pg_server), new_project(pg_server)
    _ledger(_clone(tmp_path, "a", first)).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA)
    with _as(second, second.trainer) as conn:
        assert conn.execute("SELECT count(*) FROM custodian.records").fetchone()[0] == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO custodian.records (project, stream, seq, prev, sha256, line) "
                "VALUES (%s, 'other-stream', 0, %s, encode(sha256('x'), 'hex'), 'x')",
                (first.name, "0" * 64),
            )
    # A second project's clone that claims the first project's name sees nothing of it.
    spoof = tmp_path / "spoof" / ".custodian"
    spoof.mkdir(parents=True)
    config.save(spoof, config.StoreConfig(second.url(second.trainer), first.name))
    assert _ledger(spoof).history(DATA) == []


def test_a_second_clone_shares_the_spend_and_is_refused_when_exhausted(
    pg_project: PgProject, tmp_path: Path
) -> None:
    lifetime = _lifetime_fitting(1)
    alice, bob = _clone(tmp_path, "alice", pg_project), _clone(tmp_path, "bob", pg_project)
    _ledger(alice).open_run(DATA, "alice-1", SIGMA, Q, "rdp", DELTA, lifetime).record_steps(STEPS)
    assert _ledger(bob).history(DATA) == [SgdSteps(SIGMA, Q, STEPS)]
    reviewer = _clone(tmp_path, "reviewer", pg_project, pg_project.reviewer)
    assert _ledger(reviewer).summary()[0].steps == STEPS
    bobs = _ledger(bob).open_run(DATA, "bob-1", SIGMA, Q, "rdp", DELTA, lifetime)
    with pytest.raises(BudgetExceeded):
        bobs.record_steps(STEPS)
    assert not (alice / "privacy-ledger.jsonl").exists()


def test_store_url_with_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(config.StoreConfigError, match="password"):
        config.StoreConfig("postgresql://u:secret@db/x", "p")
    with pytest.raises(config.StoreConfigError, match="password"):
        config.StoreConfig("postgresql://u@db/x?password=secret", "p")


# Faults: a dedicated server, because these tests stop it.


@pytest.fixture(scope="module")
def own_server():
    with pgserver.throwaway_server() as server:
        with psycopg.connect(server.url()) as conn:
            migrate_schema(conn)
        yield server


def test_a_server_gone_before_a_reservation_stops_it(own_server, tmp_path: Path) -> None:
    project = new_project(own_server)
    directory = _clone(tmp_path, "clone", project)
    run = _ledger(directory).open_run(DATA, "r", SIGMA, Q, "rdp", DELTA)
    run.record_steps(10)
    own_server.stop("immediate")
    try:
        with pytest.raises(LedgerUnavailable, match="not confirmed"):
            run.record_steps(20)
        assert run.steps == 10
    finally:
        own_server.start()
    # The handle retries on a fresh connection; the earlier reservation is still there.
    assert _ledger(directory).history(DATA) == [SgdSteps(SIGMA, Q, 10)]
    run.record_steps(20)
    run.record_steps(20)
    assert _ledger(directory).verify().records == 3
    # A restart while the handle is idle costs nothing: its next session reconnects.
    own_server.stop("immediate")
    own_server.start()
    run.record_steps(30)
    assert _ledger(directory).history(DATA) == [SgdSteps(SIGMA, Q, 30)]


def _reserve_forever(directory: Path, acknowledged) -> None:
    run = _ledger(directory).open_run(DATA, "loop", SIGMA, Q, "rdp", DELTA)
    steps = run.steps
    while True:
        steps += 1
        try:
            run.record_steps(steps)
        except (LedgerUnavailable, StoreError):
            time.sleep(0.01)
            steps -= 1
            continue
        acknowledged.value = steps  # only after the reservation's commit returned


@pytest.mark.slow
def test_killing_server_and_client_never_loses_a_committed_reservation(
    own_server, tmp_path: Path
) -> None:
    project = new_project(own_server)
    directory = _clone(tmp_path, "clone", project)
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(23)
    for _trial in range(20):
        acknowledged = ctx.Value("q", 0)
        client = ctx.Process(target=_reserve_forever, args=(directory, acknowledged))
        client.start()
        time.sleep(rng.uniform(0.05, 0.3))
        # The server crashes (no shutdown checkpoint) and the client dies, in either order.
        if rng.random() < 0.5:
            client.kill()
        own_server.stop("immediate")
        client.kill()
        client.join(10)
        own_server.start()
        reserved = _ledger(directory).history(DATA)
        assert reserved[0].steps >= acknowledged.value  # never under-counts
        assert _ledger(directory).verify().records >= 1
