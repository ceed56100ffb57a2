"""The audit log on both backends side by side: what one logged command costs as the log grows.

    .venv/bin/python bench/bench_audit_store.py [--sizes 100 1000 5000] [--commands 20] [--json]

A logged command appends a start event, signs a checkpoint, appends its outcome and
signs again (custodian.services.trail). This times exactly that, through
:class:`audits.log.AuditLog`, on local files (``flock`` + ``fsync``) and on a throwaway
PostgreSQL server started here (tests/stores/pgserver.py, ``synchronous_commit`` on),
after filling each log to each size. On the server a checkpoint reads the log's rows
again (a snapshot), so its cost grows with the log; on files it reads only the tail.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from audits.keys import SigningKey  # noqa: E402
from audits.log import AuditEvent, AuditLog, EventKind  # noqa: E402
from stores import config  # noqa: E402
from stores.postgres import add_project, migrate_schema, writer_role  # noqa: E402
from tests.stores import pgserver  # noqa: E402


def _event(number: int) -> AuditEvent:
    return AuditEvent(
        actor="bench",
        command="custodian bench",
        kind=EventKind.COMMAND_SUCCEEDED,
        stage="train",
        details={"number": number, "padding": "x" * 200},
    )


def _log(directory: Path) -> AuditLog:
    path = directory / "audit" / "log.jsonl"
    return AuditLog(path, path.parent / "checkpoint.json", store_dir=directory)


def commands_per_s(directory: Path, size: int, commands: int, key: SigningKey) -> float:
    log = _log(directory)
    log.open_tree(key)
    while log.current_checkpoint() is None or log.current_checkpoint().tree_head.tree_size < size:
        for number in range(100):
            log.append(_event(number))
        log.write_checkpoint(key)
    start = time.perf_counter()
    for number in range(commands):
        log.append(_event(number))
        log.write_checkpoint(key)
        log.append(_event(number))
        log.write_checkpoint(key)
    return commands / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--commands", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    key = SigningKey.generate()
    rows = []
    with tempfile.TemporaryDirectory() as temp, pgserver.throwaway_server() as server:
        with psycopg.connect(server.url()) as conn:
            migrate_schema(conn)
            conn.commit()
        for size in args.sizes:
            project = f"bench{size}"
            with psycopg.connect(server.url()) as conn:
                add_project(conn, project)
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                        sql.Identifier(f"{project}_w"), sql.Identifier(writer_role(project))
                    )
                )
                conn.commit()
            local = Path(temp) / f"local{size}"
            remote = Path(temp) / f"pg{size}"
            local.mkdir()
            remote.mkdir()
            config.save(remote, config.StoreConfig(server.url(f"{project}_w"), project))
            rows.append(
                {
                    "entries": size,
                    "local_commands_per_s": commands_per_s(local, size, args.commands, key),
                    "postgresql_commands_per_s": commands_per_s(remote, size, args.commands, key),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("logged commands/s (2 appends + 2 checkpoints each), by entries already in the log")
    for row in rows:
        ratio = row["postgresql_commands_per_s"] / row["local_commands_per_s"]
        print(
            f"  {row['entries']:>6} entries: local {row['local_commands_per_s']:8.1f}  "
            f"postgresql {row['postgresql_commands_per_s']:8.1f}  (pg/local {ratio:.2f})"
        )


if __name__ == "__main__":
    main()
