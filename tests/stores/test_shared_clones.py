"""Clones of one project pointed at the same PostgreSQL store (a real server): each sees the
others' audit events and sign-offs with ``custodian audit show`` and ``custodian release
check``, and trusts the pipeline keys that sign the shared log, as the CLI runs them
(the project is tests/custodian/test_signoff_cli.py's reviewed project; nothing is mocked).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audits.keys import load_signing_key
from custodian.project import Project
from stores import config
from tests.custodian.test_audit_cli import invoke
from tests.custodian.test_signoff_cli import (
    both_signed,
    build_reviewed_project,
    check,
    codes,
)
from tests.stores.conftest import PgProject


def _signoff_events(shown: list[dict]) -> list[tuple[str, str]]:
    return [
        (e["event"]["details"]["signoff"]["reviewer"], e["event"]["details"]["signoff"]["role"])
        for e in shown
        if e["event"]["kind"] == "decision" and "signoff" in e["event"]["details"]
    ]


def _clone(root: Path, clone: Path) -> None:
    """What ``git clone`` gives: the tree without the local, uncommitted ``.custodian/``."""
    shutil.copytree(root, clone, ignore=lambda d, names: [".custodian"] if d == str(root) else [])


def _home(path: Path, *people: str, source: Path) -> Path:
    """A person's machine: their own private keys, and no pipeline key until first use."""
    (path / "keys").mkdir(parents=True)
    for name in people:
        shutil.copy2(source / "keys" / f"{name}.pem", path / "keys" / f"{name}.pem")
    return path


def _events(root: Path) -> list[dict]:
    shown = invoke("audit", "show", "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.slow
def test_clones_on_one_store_share_events_signoffs_and_pipeline_keys(
    pg_project: PgProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer_home = tmp_path / "trainer-home"
    monkeypatch.setenv("CUSTODIAN_HOME", str(trainer_home))
    root = tmp_path / "trainer" / "project"
    root.mkdir(parents=True)
    # The store is chosen before the first command: every event the trainer logs is a row.
    pg_project.use(root / ".custodian")
    build_reviewed_project(root)
    audit = root / ".custodian" / "audit"
    assert not (audit / "log.jsonl").exists() and not (audit / "checkpoint.json").exists()
    assert not (root / ".custodian" / "trust" / "index.json").exists()

    # The reviewers sign on their own clone and machine: another pipeline key signs there.
    signers = tmp_path / "signers" / "project"
    _clone(root, signers)
    pg_project.use(signers / ".custodian")
    monkeypatch.setenv(
        "CUSTODIAN_HOME",
        str(_home(tmp_path / "signers-home", "olivia", "max", source=trainer_home)),
    )
    both_signed(signers, monkeypatch)
    pipeline_keys = {
        load_signing_key(home / "keys" / "pipeline.pem").fingerprint
        for home in (trainer_home, tmp_path / "signers-home")
    }
    assert len(pipeline_keys) == 2

    # The trainer's clone sees the sign-offs in the shared log and trusts the signers'
    # pipeline key from the shared trust store; with their envelopes pulled, it may release.
    monkeypatch.setenv("CUSTODIAN_HOME", str(trainer_home))
    events = _events(root)
    assert _signoff_events(events) == [("olivia", "privacy-officer"), ("max", "model-owner")]
    assert _events(signers) == events
    verified = invoke("audit", "verify", cwd=root)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shutil.copytree(signers / "signoffs", root / "signoffs")
    result, verdict = check(root)
    assert result.returncode == 0, verdict["reasons"]

    # A reviewer's clone with the read-only role and no keys of its own sees all of it.
    clone = tmp_path / "reviewer" / "project"
    _clone(signers, clone)
    pg_project.use(clone / ".custodian", pg_project.reviewer)
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "reviewer-home"))
    assert _events(clone) == events  # every event, the sign-offs' included
    local = Project(clone).local_trust_store().entries()
    assert {entry.fingerprint for entry in local} == pipeline_keys
    verified = invoke("audit", "verify", cwd=clone)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result, verdict = check(clone)
    assert result.returncode == 0, verdict["reasons"]
    counted = {(s["reviewer"], s["role"], s["status"]) for s in verdict["signoffs"]}
    assert counted == {("olivia", "privacy-officer", "counted"), ("max", "model-owner", "counted")}
    # Its role reads only: a logged command is refused by the server, and nothing changed.
    refused = invoke("keys", "generate", "eve", "--role", "reviewer", cwd=clone)
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    assert _events(root) == events

    # Control: the same clone on its own local files has no events and trusts no pipeline
    # key, and the release is blocked: its log does not extend what the sign-offs witnessed.
    config.save(clone / ".custodian", None)
    assert not Project(clone).audit_log_path.exists()
    assert Project(clone).local_trust_store().entries() == ()
    result, verdict = check(clone)
    assert result.returncode == 1
    assert "log_not_extending_checkpoint" in codes(verdict)
