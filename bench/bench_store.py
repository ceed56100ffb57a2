"""The record store's backends side by side: durable appends/s, reservations/s, a trainer race.

    .venv/bin/python bench/bench_store.py [--appends 2000] [--reservations 200]
        [--trainers 8] [--per-trainer 25] [--json]

Both backends run in one process, on this machine: local files (``flock`` + ``fsync``
per append) and a throwaway PostgreSQL server started here (tests/stores/pgserver.py:
a Unix socket, ``fsync`` and ``synchronous_commit`` on, as printed). Each append is one
session (a lock or a transaction) and returns only once durable. A reservation is
:meth:`privacy.ledger.LedgerRun.record_steps` with a lifetime budget: read and verify
the ledger, compose the spend, append. The race starts N trainer processes at once,
each reserving steps one block at a time on the same dataset. The reference is the
server's own limit: bare one-row durable commits on one connection.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from privacy.ledger import PrivacyLedger  # noqa: E402
from stores import config  # noqa: E402
from stores.local import Link  # noqa: E402
from stores.postgres import add_project, migrate_schema, writer_role  # noqa: E402
from stores.select import open_stream  # noqa: E402
from tests.stores import pgserver  # noqa: E402

DATA = "0b" * 32
SIGMA, Q, DELTA, LIFETIME = 1.0, 0.001, 1e-5, 1e9


def _link(line: bytes) -> Link | None:
    record = json.loads(line)
    return Link(record["seq"], record["prev"])


def _record(seq: int, prev: str) -> bytes:
    return json.dumps({"prev": prev, "seq": seq, "payload": "x" * 200}, sort_keys=True).encode()


def bare_commits_per_s(server: pgserver.Server, count: int) -> float:
    """The server's own limit: one-row INSERTs of a record-sized line, each its own
    durable commit, on one connection (no chain, no lock, no trigger)."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE bare_commits (id bigserial PRIMARY KEY, line bytea)")
        line = _record(0, "0" * 64)
        start = time.perf_counter()
        for _ in range(count):
            conn.execute("INSERT INTO bare_commits (line) VALUES (%s)", (line,))
        return count / (time.perf_counter() - start)


def appends_per_s(directory: Path, count: int) -> float:
    stream = open_stream(directory / "bench.jsonl", _link)
    start = time.perf_counter()
    for _ in range(count):
        with stream.session() as session:
            session.append([_record])
    return count / (time.perf_counter() - start)


def _appender(directory: Path, name: str, count: int, barrier) -> None:
    stream = open_stream(directory / f"{name}.jsonl", _link)
    barrier.wait(60)
    for _ in range(count):
        with stream.session() as session:
            session.append([_record])


def concurrent_appends_per_s(directory: Path, writers: int, count: int) -> float:
    """``writers`` processes, each appending ``count`` records to its own stream."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(writers + 1)
    workers = [
        ctx.Process(target=_appender, args=(directory, f"log-{i}", count, barrier))
        for i in range(writers)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(60)
    start = time.perf_counter()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    return writers * count / (time.perf_counter() - start)


def reservations_per_s(directory: Path, count: int) -> float:
    run = PrivacyLedger(directory / "privacy-ledger.jsonl").open_run(
        DATA, "bench", SIGMA, Q, "rdp", DELTA, LIFETIME
    )
    start = time.perf_counter()
    for steps in range(1, count + 1):
        run.record_steps(steps)
    return count / (time.perf_counter() - start)


def _trainer(directory: Path, name: str, blocks: int, barrier) -> None:
    run = PrivacyLedger(directory / "privacy-ledger.jsonl").open_run(
        DATA, name, SIGMA, Q, "rdp", DELTA, LIFETIME
    )
    barrier.wait(60)
    for block in range(1, blocks + 1):
        run.record_steps(block * 10)


def race(directory: Path, trainers: int, blocks: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(trainers + 1)
    workers = [
        ctx.Process(target=_trainer, args=(directory, f"race-{i}", blocks, barrier))
        for i in range(trainers)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(60)
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - start
    failed = sum(worker.exitcode != 0 for worker in workers)
    (spend,) = PrivacyLedger(directory / "privacy-ledger.jsonl").summary()
    races = [r for r in spend.runs if r.run_id.startswith("race-") and r.steps == blocks * 10]
    return {
        "seconds": seconds,
        "reservations_per_s": trainers * blocks / seconds,
        "failed_trainers": failed,
        "complete_runs": len(races),
    }


def _postgres_dir(server: pgserver.Server, root: Path) -> Path:
    with psycopg.connect(server.url(), autocommit=False) as conn:
        migrate_schema(conn)
        add_project(conn, "bench")
        conn.execute(
            sql.SQL("CREATE ROLE bench_trainer LOGIN IN ROLE {}").format(
                sql.Identifier(writer_role("bench"))
            )
        )
        conn.commit()
    directory = root / "postgresql" / ".custodian"
    directory.mkdir(parents=True)
    config.save(directory, config.StoreConfig(server.url("bench_trainer"), "bench"))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--reservations", type=int, default=200)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--trainers", type=int, default=8)
    parser.add_argument("--per-trainer", type=int, default=25)
    parser.add_argument(
        "--commit-delay-us",
        type=int,
        default=0,
        help="The server's commit_delay: wait this long to flush concurrent commits together.",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as temp, pgserver.throwaway_server() as server:
        root = Path(temp)
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET commit_delay = {int(args.commit_delay_us)}")
            conn.execute("SELECT pg_reload_conf()")
        with psycopg.connect(server.url()) as conn:
            settings = {
                name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0]
                for name in ("fsync", "synchronous_commit", "commit_delay", "server_version")
            }
        local = root / "local" / ".custodian"
        local.mkdir(parents=True)
        directories = {"local": local, "postgresql": _postgres_dir(server, root)}
        bare = bare_commits_per_s(server, args.appends)
        for backend, directory in directories.items():
            results[backend] = {
                "durable_appends_per_s": appends_per_s(directory, args.appends),
                "concurrent_durable_appends_per_s": concurrent_appends_per_s(
                    directory, args.writers, args.appends // args.writers
                ),
                "reservations_per_s": reservations_per_s(directory, args.reservations),
                "race": race(directory, args.trainers, args.per_trainer),
            }
    results["postgresql"]["server"] = settings
    results["postgresql"]["bare_commits_per_s"] = bare
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"server: PostgreSQL {settings['server_version']}, fsync {settings['fsync']}, "
        f"synchronous_commit {settings['synchronous_commit']}, "
        f"commit_delay {settings['commit_delay']} us"
    )
    appends = float(results["postgresql"]["durable_appends_per_s"])
    print(
        f"{'bare_commits_per_s':32s} postgresql {bare:9.1f}  "
        f"(durable appends / bare commits {appends / bare:.2f})"
    )
    metrics = ("durable_appends_per_s", "concurrent_durable_appends_per_s", "reservations_per_s")
    for metric in metrics:
        values = {backend: float(results[backend][metric]) for backend in directories}
        ratio = values["postgresql"] / values["local"]
        print(
            f"{metric:32s} local {values['local']:9.1f}  postgresql "
            f"{values['postgresql']:9.1f}  (postgresql/local {ratio:.2f})"
        )
    for backend in directories:
        outcome = results[backend]["race"]
        print(
            f"race {backend:10s} {args.trainers} trainers x {args.per_trainer} reservations: "
            f"{outcome['seconds']:.2f} s, {outcome['reservations_per_s']:.1f}/s, "
            f"{outcome['complete_runs']} complete runs, {outcome['failed_trainers']} failed"
        )


if __name__ == "__main__":
    main()
