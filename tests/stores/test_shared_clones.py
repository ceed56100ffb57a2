"""Two clones of one project pointed at the same PostgreSQL store (a real server): the
reviewer's clone sees the trainer's audit events and sign-offs with ``custodian audit show``
and ``custodian release check``, as the CLI runs them (tests/custodian/test_signoff_cli.py
builds the project the same way; nothing is mocked).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from custodian.project import Project
from stores import config
from tests.conftest import committed
from tests.custodian.test_audit_cli import invoke
from tests.custodian.test_signoff_cli import (
    PIPELINE,
    both_signed,
    check,
    codes,
    compliance,
    run_report_stage,
    write_compliance,
)
from tests.stores.conftest import PgProject


def _trainers_project(root: Path) -> None:
    """A model, a passing compliance report, a manifest and two reviewers' keys."""
    (root / "models").mkdir(parents=True)
    (root / "reports").mkdir()
    (root / "params.yaml").write_bytes(committed("params.yaml"))
    (root / "dvc.yaml").write_text(PIPELINE)
    (root / "data.csv").write_text("x,y\n1,0\n2,1\n")
    (root / "models/model.safetensors").write_bytes(bytes(range(256)) * 4)
    (root / "models/model.json").write_text('{"hidden": [4]}\n')
    (root / "reports/privacy.json").write_text('{"epsilon": 3.0}\n')
    (root / "reports/compliance.html").write_text("<html><body>report</body></html>\n")
    write_compliance(root, compliance())
    for args in (
        ("manifest", "--out", "reports/manifest.json"),
        ("keys", "generate", "olivia", "--role", "privacy-officer"),
        ("keys", "generate", "max", "--role", "model-owner"),
        ("keys", "generate", "ada", "--role", "trust-admin"),
        ("keys", "generate", "bob", "--role", "trust-admin"),
        ("trust", "init", "--admin", "ada", "--admin", "bob", "--threshold", "2", "--as", "ada"),
        ("trust", "sign", "--as", "bob"),
    ):
        result = invoke(*args, cwd=root)
        assert result.returncode == 0, result.stderr
    run_report_stage(root)


def _signoff_events(shown: list[dict]) -> list[tuple[str, str]]:
    return [
        (e["event"]["details"]["signoff"]["reviewer"], e["event"]["details"]["signoff"]["role"])
        for e in shown
        if e["event"]["kind"] == "decision" and "signoff" in e["event"]["details"]
    ]


@pytest.mark.slow
def test_a_reviewers_clone_sees_the_trainers_events_and_signoffs(
    pg_project: PgProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "trainer-home"))
    root = tmp_path / "trainer" / "project"
    root.mkdir(parents=True)
    # The store is chosen before the first command: every event the trainer logs is a row.
    pg_project.use(root / ".custodian")
    _trainers_project(root)
    both_signed(root, monkeypatch)
    evidence = root / ".custodian"
    assert not (evidence / "audit" / "log.jsonl").exists()
    assert not (evidence / "audit" / "checkpoint.json").exists()
    trainers = invoke("audit", "show", "--json", cwd=root)
    assert trainers.returncode == 0, trainers.stderr
    trainer_events = json.loads(trainers.stdout)
    assert _signoff_events(trainer_events) == [
        ("olivia", "privacy-officer"),
        ("max", "model-owner"),
    ]

    # The reviewer's clone: the committed tree only, another home, the read-only role.
    clone = tmp_path / "reviewer" / "project"
    shutil.copytree(root, clone, ignore=lambda d, names: [".custodian"] if d == str(root) else [])
    # The local trust store (the pipeline key that signs the log) is not in the store yet:
    # the reviewer is handed the trainer's pipeline public key.
    shutil.copytree(evidence / "trust", clone / ".custodian" / "trust")
    pg_project.use(clone / ".custodian", pg_project.reviewer)
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "reviewer-home"))

    shown = invoke("audit", "show", "--json", cwd=clone)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == trainer_events  # every event, the sign-offs' included
    verified = invoke("audit", "verify", cwd=clone)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result, verdict = check(clone)
    assert result.returncode == 0, verdict["reasons"]
    counted = {(s["reviewer"], s["role"], s["status"]) for s in verdict["signoffs"]}
    assert counted == {("olivia", "privacy-officer", "counted"), ("max", "model-owner", "counted")}
    # The reviewer's role reads only: a logged command in its clone is refused by the server.
    refused = invoke("keys", "generate", "eve", "--role", "reviewer", cwd=clone)
    assert refused.returncode == 1 and "permission denied" in refused.stderr
    assert json.loads(invoke("audit", "show", "--json", cwd=root).stdout) == trainer_events

    # Control: the same clone on its own local files has no events, and the release is
    # blocked because its log does not extend the heads the sign-offs witnessed.
    config.save(clone / ".custodian", None)
    assert not Project(clone).audit_log_path.exists()
    result, verdict = check(clone)
    assert result.returncode == 1
    assert "log_not_extending_checkpoint" in codes(verdict)
