"""`custodian store use|init|migrate|status` against a real server, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from audits.merkle import CompactRange, leaf_hash
from custodian.project import Project
from privacy.accounting import SgdSteps
from privacy.ledger import PrivacyLedger
from stores.postgres import writer_role
from tests.stores import pgserver

DATA = "ef" * 32
CUSTODIAN = str(Path(sys.executable).with_name("custodian"))


def _custodian(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_ROOT": str(root), "CUSTODIAN_HOME": str(root / "home")}
    return subprocess.run(
        [CUSTODIAN, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_use_init_migrate_status(pg_server: pgserver.Server, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    ledger_path = root / ".custodian" / "privacy-ledger.jsonl"
    run = PrivacyLedger(ledger_path).open_run(DATA, "local-run", 1.1, 0.01, "rdp", 1e-5)
    run.record_steps(30)
    local_head = PrivacyLedger(ledger_path).verify().head

    refused = _custodian(root, "store", "use", "postgresql://x:hunter2@/db", "--project", "cli")
    assert refused.returncode == 2 and "password" in refused.stderr
    assert "hunter2" not in (root / ".custodian" / "audit" / "log.jsonl").read_text()
    assert not (root / ".custodian" / "store.toml").exists()

    init = _custodian(root, "store", "init", "--url", pg_server.url(), "--project", "cli")
    assert init.returncode == 0, init.stderr
    # Before `store use`, status reads the local files: the log's checkpoint file.
    local = json.loads(_custodian(root, "store", "status", "--json").stdout)
    local_log = root / ".custodian" / "audit" / "log.jsonl"
    assert local["backend"] == "local" and local["audit_log"] == str(local_log)
    signed = json.loads((local_log.parent / "checkpoint.json").read_text())["checkpoint"]
    assert local["last_checkpoint"]["root_hash"] == signed["tree_head"]["root_hash"]
    assert local["last_checkpoint"]["tree_size"] == len(local_log.read_bytes().splitlines())
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE cli_trainer LOGIN IN ROLE {}").format(
                sql.Identifier(writer_role("cli"))
            )
        )
    used = _custodian(root, "store", "use", pg_server.url("cli_trainer"), "--project", "cli")
    assert used.returncode == 0, used.stderr
    assert (root / ".custodian" / "store.toml").stat().st_mode & 0o777 == 0o600

    migrated = _custodian(root, "store", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "2 records imported" in migrated.stdout
    again = _custodian(root, "store", "migrate")
    assert "0 records imported, 2 already there" in again.stdout

    server_copy = PrivacyLedger(ledger_path)  # now the server's stream
    assert server_copy.store.backend == "postgresql"
    assert server_copy.verify().head == local_head  # the same bytes, the same chain
    assert server_copy.history(DATA) == [SgdSteps(1.1, 0.01, 30)]

    status = _custodian(root, "store", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["backend"] == "postgresql" and report["ledger_records"] == 2
    assert report["spend"][0]["steps"] == 30
    # The last checkpoint is the server's: the migrate commands were logged there, and the
    # head signed at the end of the last one covers every entry (an independent Merkle root).
    entries = list(Project(root).audit_log().entries())
    tree = CompactRange()
    for entry in entries:
        tree.append(leaf_hash(entry.line()))
    head = report["last_checkpoint"]
    assert report["audit_log"].endswith("stream audit-log")
    assert head["tree_size"] == len(entries) and head["last_entry"] == len(entries) - 1
    assert head["root_hash"] == tree.root().hex()
    assert [e.event.command for e in entries if e.event.command] == [
        "custodian store migrate"
    ] * len([e for e in entries if e.event.command])
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        (rows,) = conn.execute(
            "SELECT count(*) FROM custodian.records WHERE project = 'cli' AND stream = 'audit-log'"
        ).fetchone()
    assert rows == len(entries) > 0
    human = _custodian(root, "store", "status")
    assert f"last checkpoint: {len(entries)} entries" in human.stdout
    assert head["root_hash"][:12] in human.stdout


def test_an_unreachable_store_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A configured server that is not there: every command that logs stops before doing
    anything, with one line naming the store, exit 2 (a setup problem, not a failed check)."""
    root = tmp_path / "project"
    (root / ".custodian").mkdir(parents=True)
    socket_dir = tmp_path / "no-server"
    socket_dir.mkdir()
    use = _custodian(
        root, "store", "use", f"postgresql://nobody@/custodian?host={socket_dir}", "--project", "x"
    )
    assert use.returncode == 0, use.stderr
    for args in (("audit", "show"), ("privacy", "ledger"), ("store", "status")):
        result = _custodian(root, *args)
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert "cannot reach store" in lines[0] or "unavailable" in lines[0], (args, lines)
