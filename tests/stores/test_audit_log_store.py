"""The audit log through the store: the same chain, checkpoints and signatures on local files
and on a real PostgreSQL server (tests/stores/pgserver.py); nothing mocked.

The log's own behaviour (tampering, torn tails, witnesses) is tested on local files in
tests/audits; here: that the server copy is the same bytes and the same checks, that a
second clone shares it, and that neither the trainer nor the DBA can rewrite it unnoticed.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from audits.keys import SigningKey
from audits.log import AuditLog, ProblemKind, TamperDetected
from audits.log.lines import entry_link
from audits.merkle import CompactRange, leaf_hash
from stores.postgres import StoreRefused
from tests.audits.events import command_event
from tests.stores import pgserver
from tests.stores.conftest import PgProject


def _log(directory: Path) -> AuditLog:
    """The log of the checkout whose evidence directory is ``directory``, as Project opens it."""
    path = directory / "audit" / "log.jsonl"
    return AuditLog(path, path.parent / "checkpoint.json", store_dir=directory)


def _clone(tmp_path: Path, name: str, project: PgProject, role: str | None = None) -> Path:
    directory = tmp_path / name / ".custodian"
    directory.mkdir(parents=True)
    project.use(directory, role)
    return directory


def _rows(project: PgProject, stream: str) -> list[tuple[int, bytes]]:
    with psycopg.connect(project.url(project.reviewer)) as conn:
        rows = conn.execute(
            "SELECT seq, line FROM custodian.records WHERE stream = %s ORDER BY seq", (stream,)
        ).fetchall()
    return [(seq, bytes(line)) for seq, line in rows]


def test_the_log_verifies_on_both_backends(store_dir: Path) -> None:
    key = SigningKey.generate()
    log = _log(store_dir)
    assert log.open_tree(key) is not None  # an empty, signed tree
    for number in range(5):
        log.append(command_event(number))
        if number % 2:
            log.write_checkpoint(key)
    head = log.write_checkpoint(key)
    entries = list(log.entries())
    assert [e.event.details["number"] for e in entries] == list(range(5))
    assert [e.seq for e in entries] == list(range(5))
    # An independent Merkle root over the entries' lines, as the checkpoint must sign.
    tree = CompactRange()
    for entry in entries:
        tree.append(leaf_hash(entry.line()))
    assert head.tree_head.tree_size == 5 and head.tree_head.root_hash == tree.root().hex()
    report = log.verify([key.public_key])
    assert report.ok and report.entries == 5 and report.covered == 5, report.problems
    assert report.checkpoint == head.tree_head
    assert log.current_checkpoint() == head == log.last_checkpoint()
    assert [index for index, _ in log.search(b'"number":3', 10)] == [3]
    # A key it does not know proves nothing: every head is reported.
    other = log.verify([SigningKey.generate().public_key])
    assert not other.ok and ProblemKind.UNKNOWN_KEY in {p.kind for p in other.problems}
    local_file = store_dir / "audit" / "log.jsonl"
    assert local_file.exists() == (log.where == str(local_file))


def test_a_second_clone_reads_and_extends_the_servers_log(
    pg_project: PgProject, tmp_path: Path
) -> None:
    key = SigningKey.generate()
    alice = _clone(tmp_path, "alice", pg_project)
    bob = _clone(tmp_path, "bob", pg_project)
    first = _log(alice)
    first.open_tree(key)
    first.append(command_event(0))
    signed = first.write_checkpoint(key)
    # Nothing of it on alice's disk: the lines and checkpoints are the server's rows.
    assert not (alice / "audit" / "log.jsonl").exists()
    assert not (alice / "audit" / "checkpoint.json").exists()
    log_rows = _rows(pg_project, "audit-log")
    assert [seq for seq, _ in log_rows] == [0]
    assert entry_link(log_rows[0][1]) == (0, "0" * 64)  # the entry carries its own chain
    assert len(_rows(pg_project, "audit-checkpoint-history")) == 2  # the empty tree, then 1
    second = _log(bob)
    assert second.current_checkpoint() == signed
    assert second.open_tree(key) is None  # bob's clone does not start a tree of its own
    second.append(command_event(1))
    second.write_checkpoint(key)
    report = first.verify([key.public_key])
    assert report.ok and report.entries == 2 and report.covered == 2, report.problems
    assert [e.event.details["number"] for e in first.entries()] == [0, 1]
    # A reviewer reads and verifies, and cannot append.
    reviewer = _log(_clone(tmp_path, "reviewer", pg_project, pg_project.reviewer))
    assert reviewer.verify([key.public_key]).ok
    with pytest.raises(StoreRefused):
        reviewer.append(command_event(2))
    assert len(list(first.entries())) == 2


def test_the_trainer_cannot_change_or_delete_audit_rows(
    pg_project: PgProject, pg_server: pgserver.Server, tmp_path: Path
) -> None:
    key = SigningKey.generate()
    log = _log(_clone(tmp_path, "alice", pg_project))
    log.open_tree(key)
    log.append(command_event(0))
    log.write_checkpoint(key)
    before = {s: _rows(pg_project, s) for s in ("audit-log", "audit-checkpoint")}
    with psycopg.connect(pg_project.url(pg_project.trainer), autocommit=True) as conn:
        for stream in before:
            for statement in (
                "UPDATE custodian.records SET line = 'x'::bytea WHERE stream = %s",
                "DELETE FROM custodian.records WHERE stream = %s",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement, (stream,))
    assert {s: _rows(pg_project, s) for s in before} == before
    assert log.verify([key.public_key]).ok


def test_a_dba_who_rewrites_an_entry_is_caught(
    pg_project: PgProject, pg_server: pgserver.Server, tmp_path: Path
) -> None:
    """The superuser can switch the triggers off and rewrite a row; the signed root still
    commits to the original entry, so verification names it, and a later checkpoint that
    extends the signed range does not launder it."""
    key = SigningKey.generate()
    log = _log(_clone(tmp_path, "alice", pg_project))
    log.open_tree(key)
    for number in range(3):
        log.append(command_event(number))
    log.write_checkpoint(key)
    (_, line) = _rows(pg_project, "audit-log")[1]
    forged = line.replace(b'"number":1', b'"number":7')
    assert forged != line
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute("ALTER TABLE custodian.records DISABLE TRIGGER USER")
        try:
            conn.execute(
                "UPDATE custodian.records SET line = %s, sha256 = encode(sha256(%s), 'hex') "
                "WHERE project = %s AND stream = 'audit-log' AND seq = 1",
                (forged, forged, pg_project.name),
            )
        finally:
            conn.execute("ALTER TABLE custodian.records ENABLE TRIGGER USER")
    report = log.verify([key.public_key])
    kinds = {problem.kind for problem in report.problems}
    assert not report.ok and {ProblemKind.CHAIN, ProblemKind.ROOT_MISMATCH} <= kinds
    # The chain breaks at the entry after the forged one; the signed root spans the forgery.
    chain = [p for p in report.problems if p.kind is ProblemKind.CHAIN]
    assert [p.entry for p in chain] == [2]
    (root,) = [p for p in report.problems if p.kind is ProblemKind.ROOT_MISMATCH]
    assert root.entry is not None and root.last_entry is not None
    assert root.entry <= 1 <= root.last_entry
    # The next writer extends the signed compact range, so it cannot launder the edit.
    log.append(command_event(3))
    log.write_checkpoint(key)
    again = log.verify([key.public_key])
    assert not again.ok and again.first_problem is not None
    assert "entries 0..2" in again.first_problem.message


def test_adopting_a_new_tree_is_refused_in_a_server_store(
    pg_project: PgProject, tmp_path: Path
) -> None:
    key = SigningKey.generate()
    log = _log(_clone(tmp_path, "alice", pg_project))
    log.open_tree(key)
    log.append(command_event(0))
    log.write_checkpoint(key)
    with pytest.raises(TamperDetected, match="cannot be adopted"):
        log.adopt(key)
    assert log.verify([key.public_key]).ok
