"""The audit trail wired into the CLI: events, signed checkpoints, review, keys, manifest.

End-to-end flows run the installed ``custodian`` in a subprocess. The tampering
matrix calls :func:`custodian.cli.main` in this process instead (the console
script's own entry point, same exit codes and stderr): the CLI imports Great
Expectations at start-up, about 4 s a process, and the matrix needs a dozen runs.

Tampering is done the way an attacker without the key would do it, with
``json``, ``rfc8785`` and ``hashlib`` on the files, never through the library's
writer.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import rfc8785
import yaml

from audits.canonical import canonical_sha256
from audits.keys import SigningKey, load_signing_key
from audits.log import AuditLog, EventKind
from custodian.cli.main import main
from custodian.project import Project
from custodian.services import trail
from tests.conftest import ROOT, custodian, run

DATASET = "fe" * 32


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, cwd: Path) -> Result:
    """``custodian ARGS`` through the console script's entry point, in this process."""
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(list(args))
    finally:
        os.chdir(previous)
    code = exit_.value.code
    return Result(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $CUSTODIAN_HOME, for this process and the subprocesses it starts."""
    path = tmp_path / "home"
    monkeypatch.setenv("CUSTODIAN_HOME", str(path))
    monkeypatch.setenv("CUSTODIAN_ACTOR", "alice")
    return path


def _log(root: Path) -> AuditLog:
    return Project(root).audit_log()


def _lines(root: Path) -> list[bytes]:
    return _log(root).path.read_bytes().splitlines()


def _save(root: Path, lines: list[bytes]) -> None:
    _log(root).path.write_bytes(b"".join(line + b"\n" for line in lines))


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Renumber and re-link every entry from ``start`` on, as a forger without the key would."""
    result = lines[:start]
    prev = hashlib.sha256(result[-1]).hexdigest() if result else "0" * 64
    for seq, line in enumerate(lines[start:], start=start):
        record = json.loads(line)
        record["seq"], record["prev"] = seq, prev
        result.append(rfc8785.dumps(record))
        prev = hashlib.sha256(result[-1]).hexdigest()
    return result


def _edit(line: bytes) -> bytes:
    record = json.loads(line)
    record["event"]["actor"] = "mallory"
    return rfc8785.dumps(record)


# --------------------------------------------------------------------------- a command's events


def test_a_stage_is_logged_signed_and_verifies(project: Path, home: Path) -> None:
    result = custodian("ingest", "--out", "data/ingested", cwd=project)
    assert result.returncode == 0, result.stderr

    entries = list(_log(project).entries())
    assert [entry.event.kind for entry in entries] == [
        EventKind.COMMAND_STARTED,
        EventKind.COMMAND_SUCCEEDED,
    ]
    started, succeeded = (entry.event for entry in entries)
    assert started.actor == "alice" and started.stage == "ingest"
    assert started.command == "custodian ingest --out data/ingested"
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert started.params_sha256 == canonical_sha256(params)
    head = run(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()
    assert started.git_commit == head
    assert succeeded.details["exit_code"] == 0
    assert succeeded.details["invocation"] == started.details["invocation"]

    checkpoint = json.loads((project / ".custodian/audit/checkpoint.json").read_text())
    assert checkpoint["checkpoint"]["tree_head"]["tree_size"] == 2
    verified = custodian("audit", "verify", cwd=project)
    assert verified.returncode == 0, verified.stderr
    assert "intact: 2 entries, 2 covered" in verified.stdout
    assert len(_lines(project)) == 2, "verify is read-only: it logs nothing"

    shown = invoke("audit", "show", "--stage", "ingest", cwd=project)
    assert shown.returncode == 0
    assert re.search(r"command_succeeded\s+ingest\s+custodian ingest", shown.stdout)
    as_json = json.loads(invoke("audit", "show", "--actor", "bob", "--json", cwd=project).stdout)
    assert as_json == []
    since = invoke("audit", "show", "--since", "2000-01-01", "--json", cwd=project)
    assert len(json.loads(since.stdout)) == 2
    assert invoke("audit", "show", "--since", "yesterday", cwd=project).returncode == 2


def test_pipeline_key_is_private_and_never_inside_the_project(project: Path, home: Path) -> None:
    assert invoke("keys", "generate", "rita", "--role", "reviewer", cwd=project).returncode == 0
    for name in ("pipeline", "rita"):
        path = home / "keys" / f"{name}.pem"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        secret = path.read_bytes()
        body = b"".join(secret.splitlines()[1:-1])  # the base64 key material
        for file in (p for p in project.rglob("*") if p.is_file() and ".git" not in p.parts):
            content = file.read_bytes()
            assert body not in content and b"PRIVATE KEY" not in content, file
    listed = json.loads(invoke("keys", "list", "--json", cwd=project).stdout)
    assert {(k["name"], k["role"], k["revoked"]) for k in listed} == {
        ("pipeline", "pipeline", False),
        ("rita", "reviewer", False),
    }
    again = invoke("keys", "generate", "rita", "--role", "reviewer", cwd=project)
    assert again.returncode == 2 and "already" in again.stderr


def test_refused_and_failed_commands_are_evidence_too(project: Path, home: Path) -> None:
    params = project / "params.yaml"
    original = params.read_text()
    params.write_text(original + "data: [\n")
    broken = custodian("ingest", "--out", "data/ingested", cwd=project)
    assert broken.returncode == 2
    params.write_text(original.replace("LicenseRef-PublicDomain: >-", "LicenseRef-Other: >-"))
    refused = custodian("ingest", "--out", "data/ingested", cwd=project)
    assert refused.returncode == 1, refused.stderr

    events = [entry.event for entry in _log(project).entries()]
    assert [event.kind for event in events] == [
        EventKind.COMMAND_STARTED,
        EventKind.COMMAND_FAILED,
        EventKind.COMMAND_STARTED,
        EventKind.REFUSED,
    ]
    assert events[0].details["params_hashed"] == "bytes"  # a broken file is hashed as is
    assert events[1].error == broken.stderr.strip().removeprefix("custodian: error: ")
    assert "LicenseRef-PublicDomain" in (events[3].error or "")
    assert events[3].details["error_type"] == "PolicyViolation"
    assert invoke("audit", "verify", cwd=project).returncode == 0


# --------------------------------------------------------------------------- tampering


@pytest.fixture(scope="module")
def signed_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project whose log holds three commands (nine entries), each signed at start and end."""
    base = tmp_path_factory.mktemp("signed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUSTODIAN_HOME", str(base / "home"))
        (base / "project").mkdir()
        for name in ("r1", "r2", "r3"):
            result = invoke("keys", "generate", name, "--role", "reviewer", cwd=base / "project")
            assert result.returncode == 0, result.stderr
    yield base


@pytest.fixture
def signed(signed_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the signed project (and its home) to tamper with."""
    shutil.copytree(signed_base, tmp_path / "copy")
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "copy" / "home"))
    return tmp_path / "copy" / "project"


def test_intact_log_verifies(signed: Path) -> None:
    result = invoke("audit", "verify", cwd=signed)
    assert result.returncode == 0, result.stderr
    assert "intact: 9 entries, 9 covered" in result.stdout


def _edited_byte(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], lines[4].replace(b"r2", b"r9", 1), *lines[5:]]


def _deleted(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], *lines[5:]]


def _reordered(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], lines[5], lines[4], *lines[6:]]


def _duplicated(lines: list[bytes]) -> list[bytes]:
    return [*lines[:5], lines[4], *lines[5:]]


def _inserted(lines: list[bytes]) -> list[bytes]:
    return [*lines[:4], _edit(lines[4]), *lines[4:]]


def _forged_and_rechained(lines: list[bytes]) -> list[bytes]:
    return _rechain([*lines[:4], _edit(lines[4]), *lines[5:]], 4)


def _inserted_and_rechained(lines: list[bytes]) -> list[bytes]:
    return _rechain([*lines[:4], _edit(lines[4]), *lines[4:]], 4)


def _truncated_tail(lines: list[bytes]) -> list[bytes]:
    return lines[:7]


def _removed_first(lines: list[bytes]) -> list[bytes]:
    return lines[1:]


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        pytest.param(_edited_byte, r"entr(y|ies) 4\b", id="edited-byte"),
        pytest.param(_deleted, r"entry 4\b", id="deleted"),
        pytest.param(_reordered, r"entry 4\b", id="reordered"),
        pytest.param(_duplicated, r"entr(y|ies) [45]\b", id="duplicated"),
        pytest.param(_inserted, r"entr(y|ies) 4\b", id="inserted"),
        pytest.param(_forged_and_rechained, r"entries 4\.\.5\b", id="forged-rechained"),
        pytest.param(_inserted_and_rechained, r"entries 4\.\.5\b", id="inserted-rechained"),
        pytest.param(_truncated_tail, r"entry 7\b.*entries 7\.\.8 are missing", id="truncated"),
        pytest.param(_removed_first, r"entry 0\b", id="removed-first"),
    ],
)
def test_each_kind_of_tampering_fails_naming_the_entry(
    signed: Path, tamper: Callable[[list[bytes]], list[bytes]], named: str
) -> None:
    _save(signed, tamper(_lines(signed)))
    result = invoke("audit", "verify", cwd=signed)
    assert result.returncode == 1, result.stdout
    error = result.stderr.strip()
    assert error.startswith("custodian: error: ") and "\n" not in error
    assert re.search(named, error), error


def test_no_command_runs_on_a_log_its_writer_refuses(signed: Path) -> None:
    _save(signed, _lines(signed)[:7])  # two signed entries cut off
    result = invoke("keys", "generate", "r4", "--role", "reviewer", cwd=signed)
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.startswith("custodian: error: ") and "\n" not in error
    assert "refusing to sign" in error
    assert not (Path(os.environ["CUSTODIAN_HOME"]) / "keys/r4.pem").exists()


def test_checkpoint_signed_by_the_wrong_key_fails(signed: Path) -> None:
    path = signed / ".custodian/audit/checkpoint.json"
    state = json.loads(path.read_text())
    head = state["checkpoint"]["tree_head"]  # still names the pipeline key's fingerprint
    signature = SigningKey.generate().sign(rfc8785.dumps(head))
    state["checkpoint"]["signature"] = base64.b64encode(signature).decode()
    path.write_text(json.dumps(state))
    result = invoke("audit", "verify", cwd=signed)
    assert result.returncode == 1
    assert "signature does not verify" in result.stderr


def test_checkpoint_signed_by_an_unknown_key_fails(signed: Path) -> None:
    pipeline = load_signing_key(Path(os.environ["CUSTODIAN_HOME"]) / "keys/pipeline.pem")
    attacker = SigningKey.generate()
    _log(signed).write_checkpoint(attacker, [pipeline.public_key])
    result = invoke("audit", "verify", cwd=signed)
    assert result.returncode == 1
    assert re.search(r"signed by key [0-9a-f]{16}\.\.\., which is not trusted", result.stderr)


def test_revoked_key_fails_verification_and_stops_the_pipeline(signed: Path) -> None:
    revoked = invoke(
        "keys", "revoke", "pipeline", "--reason", "left on a shared runner", cwd=signed
    )
    assert revoked.returncode == 0, revoked.stderr
    assert "not signed" in revoked.stderr  # the revocation is logged, unsigned
    result = invoke("audit", "verify", cwd=signed)
    assert result.returncode == 1
    assert "revoked key 'pipeline'" in result.stderr and "shared runner" in result.stderr
    blocked = invoke("keys", "generate", "r4", "--role", "reviewer", cwd=signed)
    assert blocked.returncode == 1 and "is revoked" in blocked.stderr
    assert not (Path(os.environ["CUSTODIAN_HOME"]) / "keys/r4.pem").exists()


def test_log_is_proved_to_extend_an_exported_checkpoint(signed: Path, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    assert invoke("audit", "checkpoint", "--out", str(anchor), cwd=signed).returncode == 0
    assert invoke("audit", "verify", "--against", str(anchor), cwd=signed).returncode == 0
    # Rewriting the log and re-signing it with a key the attacker trusted is caught by the anchor.
    lines = _lines(signed)
    _save(signed, lines[:3])
    for name in ("checkpoint.json", "checkpoint.history.jsonl"):
        (signed / ".custodian/audit" / name).unlink()
    # The next ordinary command no longer signs the forgery (issue 20, attack 4)...
    refused = invoke("keys", "generate", "r9", "--role", "reviewer", cwd=signed)
    assert refused.returncode == 1 and "is missing: signing them now" in refused.stderr
    assert not (signed / ".custodian/audit/checkpoint.json").exists()
    assert _lines(signed) == lines[:3]  # and appended nothing
    # ...only a person's explicit, logged adoption does.
    adopted = invoke("audit", "adopt", "--reason", "restored from backup", cwd=signed)
    assert adopted.returncode == 0, adopted.stderr
    assert b'"adopted_log":{"reason":"restored from backup"}' in b"\n".join(_lines(signed))
    assert invoke("audit", "verify", cwd=signed).returncode == 0  # locally it looks fine
    result = invoke("audit", "verify", "--against", str(anchor), cwd=signed)
    assert result.returncode == 1 and "anchored checkpoint" in result.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{}")
    assert invoke("audit", "verify", "--against", str(garbage), cwd=signed).returncode == 2


# --------------------------------------------------------------------------- the privacy ledger


def _spend(root: Path, steps: int) -> None:
    from privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(Project(root).privacy_ledger_path)
    with trail.session(Project(root), "custodian train", "train"):
        run_ = ledger.open_run(DATASET, "run-1", 1.1, 0.01, "prv", 1e-5)
        run_.record_steps(steps)
        trail.record_privacy_spend(DATASET, "run-1", 1.1, 0.01, steps, "prv", 1e-5)


def test_a_deleted_ledger_cannot_hide_spent_budget(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    _spend(root, 120)
    spends = [e for e in _log(root).entries() if e.event.kind is EventKind.DECISION]
    assert spends[0].event.details["privacy_spend"]["steps"] == 120
    assert invoke("audit", "verify", cwd=root).returncode == 0

    Project(root).privacy_ledger_path.unlink()
    result = custodian("audit", "verify", cwd=root)
    assert result.returncode == 1
    assert f"disagrees with the audit log for dataset {DATASET}" in result.stderr
    assert "120 steps in the log, 0 in the ledger" in result.stderr


def test_a_spend_missing_from_the_log_is_reported(tmp_path: Path, home: Path) -> None:
    from privacy.ledger import PrivacyLedger

    root = tmp_path / "project"
    root.mkdir()
    _spend(root, 50)
    run_ = PrivacyLedger(Project(root).privacy_ledger_path).open_run(
        DATASET, "run-1", 1.1, 0.01, "prv", 1e-5
    )
    run_.record_steps(80)  # reserved in the ledger, never logged
    result = invoke("audit", "verify", cwd=root)
    assert result.returncode == 1 and "50 steps in the log, 80 in the ledger" in result.stderr


def test_spends_require_an_active_trail() -> None:
    with pytest.raises(trail.NoActiveTrail):
        trail.record_privacy_spend(DATASET, "run-1", 1.1, 0.01, 10, "prv", 1e-5)


# --------------------------------------------------------------------------- concurrency

WRITER = textwrap.dedent(
    """
    import sys
    from audits.log import AuditEvent, AuditLog, EventKind

    log = AuditLog(sys.argv[1], sys.argv[2])
    for number in range(int(sys.argv[4])):
        log.append(AuditEvent(actor=sys.argv[3], command="custodian train",
                              kind=EventKind.DECISION, details={"number": number}))
    """
)


@pytest.mark.slow  # 4,000 fsyncs: 6 to 17 s here, depending on what else the disk is doing
def test_concurrent_writers_all_verify(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    log = _log(root)
    # A command first: it opens the signed tree (none may start later over the writers' entries).
    assert invoke("keys", "generate", "r1", "--role", "reviewer", cwd=root).returncode == 0
    processes, appends = 8, 500
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log.path), str(log.checkpoint_path), f"w{n}"]
            + [str(appends)],
            cwd=ROOT,
        )
        for n in range(processes)
    ]
    assert [writer.wait(timeout=300) for writer in writers] == [0] * processes
    result = invoke("audit", "verify", cwd=root)
    assert result.returncode == 0, result.stderr
    assert f"intact: {processes * appends + 3} entries" in result.stdout
    entries = list(log.entries())
    for n in range(processes):
        mine = [e.event.details["number"] for e in entries if e.event.actor == f"w{n}"]
        assert mine == list(range(appends)), "each writer's entries, complete and in order"


# --------------------------------------------------------------------------- artifact manifest

PIPELINE = """
stages:
  prepare:
    cmd: custodian prepare
    deps:
      - inputs
      - code.py
    params:
      - seed
    outs:
      - outputs
    metrics:
      - reports/metrics.json:
          cache: false
  audit:
    cmd: custodian manifest --out reports/manifest.json
    deps:
      - outputs
    outs:
      - reports/manifest.json:
          cache: false
"""


@pytest.fixture
def pipeline(tmp_path: Path, home: Path) -> Path:
    root = tmp_path / "project"
    for path, text in {
        "dvc.yaml": PIPELINE,
        "dvc.lock": "schema: '2.0'\n",
        "params.yaml": "seed: 1\n",
        "code.py": "print(1)\n",
        "inputs/a.csv": "x\n1\n",
        "outputs/model.json": "{}\n",
        "outputs/split/train.csv": "x\n1\n",
        "reports/metrics.json": '{"auc": 0.5}\n',
        "outputs/__pycache__/ignored.pyc": "",
    }.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    (root / ".dvc").mkdir()
    return root


def test_manifest_binds_every_pipeline_file_and_names_each_change(pipeline: Path) -> None:
    built = custodian("manifest", "--out", "reports/manifest.json", cwd=pipeline)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((pipeline / "reports/manifest.json").read_text())
    assert [item["path"] for item in manifest["files"]] == [
        "code.py",
        "inputs/a.csv",
        "outputs/model.json",
        "outputs/split/train.csv",
        "params.yaml",
        "reports/metrics.json",
    ]
    # dvc.lock is bound by the canonical JSON of its content (see lock_digest).
    assert manifest["dvc_lock_sha256"] == canonical_sha256({"schema": "2.0"})
    succeeded = list(_log(pipeline).entries())[-1].event
    assert succeeded.stage == "audit" and "reports/manifest.json" in succeeded.outputs
    assert invoke("verify", "artifacts", cwd=pipeline).returncode == 0

    (pipeline / "outputs/model.json").write_text('{"w": 1}\n')
    (pipeline / "inputs/a.csv").unlink()
    (pipeline / "outputs/split/extra.csv").write_text("x\n")
    (pipeline / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    result = custodian("verify", "artifacts", cwd=pipeline)
    assert result.returncode == 1
    summary = result.stderr.strip()
    assert "\n" not in summary and summary.startswith("custodian: error: 4 file(s) differ")
    for named in (
        "outputs/model.json (changed)",
        "inputs/a.csv (missing)",
        "outputs/split/extra.csv (added)",
        "dvc.lock (changed)",
    ):
        assert named in summary
    assert "changed: outputs/model.json (sha256" in result.stdout


def test_stages_after_the_manifest_are_left_out_of_it(pipeline: Path) -> None:
    # A stage reading the manifest (and one reading its output) runs after it: its files
    # do not exist yet when the manifest is built, and its dvc.lock entry comes later.
    spec = yaml.safe_load((pipeline / "dvc.yaml").read_text())
    spec["stages"]["report"] = {
        "cmd": "custodian report",
        "deps": ["reports/manifest.json", "reports/metrics.json", "report_code.py"],
        "outs": ["reports/compliance.json"],
    }
    spec["stages"]["publish"] = {
        "cmd": "publish",
        "deps": ["reports/compliance.json"],
        "outs": ["site"],
    }
    (pipeline / "dvc.yaml").write_text(yaml.safe_dump(spec))
    lock = {"schema": "2.0", "stages": {"prepare": {"cmd": "custodian prepare"}}}
    (pipeline / "dvc.lock").write_text(yaml.safe_dump(lock))
    built = custodian("manifest", "--out", "reports/manifest.json", cwd=pipeline)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((pipeline / "reports/manifest.json").read_text())
    assert "report_code.py" not in manifest["paths"] and "site" not in manifest["paths"]
    assert "reports/metrics.json" in manifest["paths"]  # still bound, as prepare's output

    # The later stages run and DVC records them: the manifest still holds.
    (pipeline / "reports/compliance.json").write_text("{}\n")
    lock["stages"] |= {"report": {"cmd": "custodian report"}, "publish": {"cmd": "publish"}}
    (pipeline / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert invoke("verify", "artifacts", cwd=pipeline).returncode == 0
    lock["stages"]["prepare"]["cmd"] = "custodian prepare --fast"
    (pipeline / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert "dvc.lock (changed)" in custodian("verify", "artifacts", cwd=pipeline).stderr
