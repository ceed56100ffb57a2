"""New signed trees, adoption, witnessed heads and report bindings, on logs built directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from audits.keys import SigningKey
from audits.log import AuditEvent, AuditLog, EventKind, NewTreeRefused, ProblemKind
from audits.report_binding import ReportBinding, binding_problem
from audits.witness import Witness, witness_problems

MANIFEST = {"reports/manifest.json": "a" * 64}
PACK = {"reports/compliance.json": "b" * 64, "reports/compliance.html": "c" * 64}


def _event(kind: EventKind = EventKind.DECISION, invocation: str = "i0", **details) -> AuditEvent:
    return AuditEvent(
        actor="alice",
        command="custodian report",
        kind=kind,
        details={"invocation": invocation, **details},
    )


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit/log.jsonl", tmp_path / "audit/checkpoint.json")


def test_a_new_tree_starts_empty_and_never_over_history(log: AuditLog, key: SigningKey) -> None:
    genesis = log.open_tree(key)
    assert genesis is not None and genesis.tree_head.tree_size == 0
    assert log.open_tree(key) is None  # a tree exists: nothing to do
    for _ in range(3):
        log.append(_event())
    log.write_checkpoint(key)
    log.checkpoint_path.unlink()
    log.history_path.unlink()
    with pytest.raises(NewTreeRefused, match="holds entries but"):
        log.open_tree(key)
    assert not log.checkpoint_path.exists()
    adopted = log.adopt(key)
    assert adopted.tree_head.tree_size == 3
    assert log.verify([key.public_key]).ok


def test_an_empty_log_that_a_witness_saw_is_refused(log: AuditLog, key: SigningKey) -> None:
    log.open_tree(key)
    log.append(_event())
    seen = log.write_checkpoint(key)
    for path in (log.path, log.checkpoint_path, log.history_path):
        path.unlink()
    with pytest.raises(NewTreeRefused, match="committed checkpoints witness a log of 1"):
        log.open_tree(key, lambda: [seen])
    assert log.open_tree(key, lambda: []) is not None  # no witness: indistinguishable from new


def test_adoption_sets_the_old_checkpoints_aside(log: AuditLog, key: SigningKey) -> None:
    log.open_tree(key)
    log.append(_event())
    log.write_checkpoint(key)
    log.path.write_bytes(log.path.read_bytes().replace(b"alice", b"mallo"))
    assert not log.verify([key.public_key]).ok
    log.adopt(key)
    assert log.verify([key.public_key]).ok
    aside = sorted(p.name for p in log.path.parent.iterdir() if ".adopted-" in p.name)
    assert aside == ["checkpoint.history.jsonl.adopted-1", "checkpoint.json.adopted-1"]


def test_the_log_must_extend_each_witnessed_head(log: AuditLog, key: SigningKey) -> None:
    log.open_tree(key)
    for _ in range(4):
        log.append(_event())
    early = Witness("signoffs/a.dsse.json", log.write_checkpoint(key))
    log.append(_event())
    late = Witness("signoffs/b.dsse.json", log.write_checkpoint(key))
    keys = [key.public_key]
    assert witness_problems(log, keys, [early, late, early]) == []

    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:3]))  # truncated, checkpoints rolled back with it
    log.checkpoint_path.unlink()
    log.history_path.unlink()
    problems = witness_problems(log, keys, [early, late])
    assert len(problems) == 2
    assert problems[0].startswith("signoffs/a.dsse.json witnessed the log at 4 entries")
    assert "truncated or rolled back" in problems[0]
    report = log.verify(keys, against=late.checkpoint)
    assert ProblemKind.INCONSISTENT_WITH_ANCHOR in {p.kind for p in report.problems}


def _binding(passed: bool = True, **files: str) -> dict:
    pack = {**PACK, **{k.replace("_", "."): v for k, v in files.items()}}
    return ReportBinding(manifest=MANIFEST, files=pack, passed=passed).details()


def test_only_the_latest_succeeded_report_run_binds(log: AuditLog) -> None:
    assert "no report run" in binding_problem([], MANIFEST, PACK)
    log.append(_event(invocation="r1", **_binding()))
    log.append(_event(EventKind.COMMAND_SUCCEEDED, invocation="r1"))
    entries = list(log.entries())
    assert binding_problem(entries, MANIFEST, PACK) is None
    edited = {**PACK, "reports/compliance.json": "d" * 64}
    assert "is not the file the latest report run wrote" in binding_problem(
        entries, MANIFEST, edited
    )
    other = {"reports/manifest.json": "e" * 64}
    assert "built for another reports/manifest.json" in binding_problem(entries, other, PACK)

    # A later failing run over the same manifest: putting back r1's pack does not help.
    log.append(_event(invocation="r2", **_binding(passed=False)))
    log.append(_event(EventKind.REFUSED, invocation="r2"))
    assert "failed its gates" in binding_problem(list(log.entries()), MANIFEST, PACK)
    # A binding whose run never ended succeeded (killed, or the outcome forged away) binds nothing.
    log.append(_event(invocation="r3", **_binding()))
    assert "did not succeed" in binding_problem(list(log.entries()), MANIFEST, PACK)
