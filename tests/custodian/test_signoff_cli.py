"""`custodian signoff` and `custodian release check`: every refusal and every reason.

The project here is small and built by hand: a model, a compliance report
that a test writes (the report stage is not part of this fixture; no fake
evidence is ever written into the repository's own reports/), and a real
artifact manifest made by ``custodian manifest`` over a two-stage dvc.yaml.
Commands run in this process through the console script's entry point (see
test_audit_cli.py for why). Forgeries are made with the library's DSSE and
statement code or by editing the files as an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from audits.keys import SigningKey, load_signing_key
from audits.log import EventKind
from audits.signoff import Statement, sign_statement
from custodian.project import Project
from custodian.services import trail
from custodian.stages.report import bind_report
from tests.conftest import committed
from tests.custodian.test_audit_cli import Result, invoke

PIPELINE = """
stages:
  train:
    cmd: custodian train
    deps:
      - data.csv
    outs:
      - models
  audit:
    cmd: custodian manifest --out reports/manifest.json
    deps:
      - models
    outs:
      - reports/manifest.json
"""


def compliance(*failing: str) -> dict[str, object]:
    gates = [
        {
            "id": gate,
            "title": gate.replace("_", " "),
            "passed": gate not in failing,
            "waived": False,
            "waiver_reason": None,
            "detail": "test fixture",
            "evidence": ["reports/privacy.json"],
        }
        for gate in ("privacy_budget", "fairness", "data_checks")
    ]
    return {
        "format": "custodian-compliance/v1",
        "passed": not failing,
        "gates": gates,
        "nist_ai_rmf": [],
        "signoffs": {},
    }


def write_compliance(root: Path, report: dict[str, object]) -> None:
    (root / "reports/compliance.json").write_text(json.dumps(report, indent=2))


def run_report_stage(root: Path, *, passed: bool = True) -> None:
    """Log the pack on disk as the report stage does (the stage itself is not in this fixture).

    A failing run ends refused, as the real stage does when a gate fails.
    """
    project = Project(root)
    pack = (root / "reports/compliance.json", root / "reports/compliance.html")
    try:
        with trail.session(project, "custodian report", "report", lambda error: True):
            bind_report(project, root / "reports/manifest.json", pack, passed)
            if not passed:
                raise RuntimeError("a gate failed")
    except RuntimeError:
        assert not passed


def build_reviewed_project(root: Path) -> None:
    """A model, a passing compliance report, a manifest, two reviewers' keys and a signed
    trust root, logged as the report stage logs it (keys go to ``$CUSTODIAN_HOME``)."""
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
    trust_init = ("trust", "init", "--admin", "ada", "--admin", "bob", "--threshold", "2")
    for args in (
        ("manifest", "--out", "reports/manifest.json"),
        ("keys", "generate", "olivia", "--role", "privacy-officer"),
        ("keys", "generate", "max", "--role", "model-owner"),
        ("keys", "generate", "ada", "--role", "trust-admin"),
        ("keys", "generate", "bob", "--role", "trust-admin"),
        (*trust_init, "--as", "ada"),
        ("trust", "sign", "--as", "bob"),
    ):
        result = invoke(*args, cwd=root)
        assert result.returncode == 0, result.stderr
    run_report_stage(root)


@pytest.fixture(scope="module")
def reviewed_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A reviewed project (:func:`build_reviewed_project`) with its keys' home beside it."""
    base = tmp_path_factory.mktemp("reviewed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUSTODIAN_HOME", str(base / "home"))
        build_reviewed_project(base / "project")
    yield base


@pytest.fixture
def project(reviewed_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(reviewed_base, tmp_path / "copy")
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "copy" / "home"))
    return tmp_path / "copy" / "project"


def sign(root: Path, name: str, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Result:
    monkeypatch.setenv("CUSTODIAN_ACTOR", f"{name}@example.org")
    return invoke("signoff", "--as", name, *extra, cwd=root)


def check(root: Path) -> tuple[Result, dict]:
    result = invoke("release", "check", "--json", cwd=root)
    return result, json.loads(result.stdout)


def codes(verdict: dict) -> list[str]:
    return [reason["code"] for reason in verdict["reasons"]]


def signoff_files(root: Path) -> list[Path]:
    return sorted((root / "signoffs").glob("*.dsse.json"))


def both_signed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("olivia", "max"):
        result = sign(root, name, monkeypatch)
        assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- the release flow


def test_release_needs_both_roles_and_exactly_the_current_model(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, verdict = check(project)
    assert result.returncode == 1 and verdict["passed"] is False
    assert codes(verdict) == ["missing_role", "missing_role"]
    assert "privacy-officer" in verdict["reasons"][0]["message"]
    assert "model-owner" in verdict["reasons"][1]["message"]
    assert result.stderr.strip() == "custodian: error: release blocked by 2 reason(s): missing_role"

    signed = sign(project, "olivia", monkeypatch, "--note", "reviewed the DP budget")
    assert signed.returncode == 0, signed.stderr
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["missing_role"]
    assert "model-owner" in verdict["reasons"][0]["message"]

    assert sign(project, "max", monkeypatch).returncode == 0
    result, verdict = check(project)
    assert result.returncode == 0, verdict["reasons"]
    assert verdict["passed"] is True and verdict["reasons"] == []
    counted = {(s["reviewer"], s["role"], s["status"]) for s in verdict["signoffs"]}
    assert counted == {("olivia", "privacy-officer", "counted"), ("max", "model-owner", "counted")}
    human = invoke("release", "check", cwd=project)
    assert human.returncode == 0
    assert "passed: privacy-officer: olivia, model-owner: max" in human.stdout

    model = project / "models/model.safetensors"
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    result, verdict = check(project)
    assert result.returncode == 1
    assert set(codes(verdict)) == {"changed_artifact"}
    messages = " ".join(reason["message"] for reason in verdict["reasons"])
    assert "models/model.safetensors (signed" in messages  # each role's sign-off is stale
    assert "since reports/manifest.json: changed: models/model.safetensors" in messages
    assert {s["status"] for s in verdict["signoffs"]} == {"superseded"}


def test_a_signoff_is_a_statement_over_the_artifacts_and_an_audit_event(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sign(project, "olivia", monkeypatch, "--note", "  DP budget\nchecked ").returncode == 0
    (path,) = signoff_files(project)
    assert path.name.startswith("olivia-") and path.parent.name == "signoffs"
    envelope = json.loads(path.read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [
        Project(project).trust_store().get("olivia").fingerprint
    ]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://custodian.invalid/signoff/v1"
    expected = {
        name: hashlib.sha256((project / name).read_bytes()).hexdigest()
        for name in (
            "models/model.safetensors",
            "models/model.json",
            "reports/compliance.json",
            "reports/compliance.html",
            "reports/manifest.json",
        )
    }
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == expected
    predicate = statement["predicate"]
    assert (predicate["reviewer"], predicate["role"], predicate["actor"]) == (
        "olivia",
        "privacy-officer",
        "olivia@example.org",
    )
    assert predicate["note"] == "DP budget checked"
    assert [g["id"] for g in predicate["gates"]] == ["privacy_budget", "fairness", "data_checks"]
    privacy = hashlib.sha256((project / "reports/privacy.json").read_bytes()).hexdigest()
    assert predicate["evidence"] == {"reports/privacy.json": privacy}
    assert predicate["policy"]["required_roles"] == ["privacy-officer", "model-owner"]

    events = list(Project(project).audit_log().entries())
    decisions = [e.event for e in events if e.event.kind is EventKind.DECISION]
    logged = decisions[-1].details["signoff"]
    assert logged["file"] == f"signoffs/{path.name}" and logged["role"] == "privacy-officer"
    assert logged["subjects"] == expected
    succeeded = [e.event for e in events if e.event.kind is EventKind.COMMAND_SUCCEEDED][-1]
    assert succeeded.outputs == {
        f"signoffs/{path.name}": hashlib.sha256(path.read_bytes()).hexdigest()
    }


def test_reviewers_keys_are_in_the_committed_store_and_the_pipeline_key_is_local(
    project: Path,
) -> None:
    people = ["ada.pem", "bob.pem", "max.pem", "olivia.pem"]
    assert sorted(p.name for p in (project / "trust").glob("*.pem")) == people
    assert [p.name for p in (project / ".custodian/trust").glob("*.pem")] == ["pipeline.pem"]
    listed = json.loads(invoke("keys", "list", "--json", cwd=project).stdout)
    assert {(k["name"], k["role"], k["store"]) for k in listed} == {
        ("olivia", "privacy-officer", "project"),
        ("max", "model-owner", "project"),
        ("ada", "trust-admin", "project"),
        ("bob", "trust-admin", "project"),
        ("pipeline", "pipeline", "local"),
    }
    taken = invoke("keys", "generate", "pipeline", "--role", "pipeline", cwd=project)
    assert taken.returncode == 2 and "already in the trust store" in taken.stderr


# --------------------------------------------------------------------------- sign-off refusals


def _drop_compliance(root: Path) -> None:
    (root / "reports/compliance.json").unlink()


def _failing_gate(root: Path) -> None:
    write_compliance(root, compliance("fairness", "data_checks"))


def _inconsistent(root: Path) -> None:
    write_compliance(root, {**compliance(), "passed": False})


def _not_a_report(root: Path) -> None:
    write_compliance(root, {"format": "custodian-compliance/v1", "gates": []})


def _stale_manifest(root: Path) -> None:
    (root / "data.csv").write_text("x,y\n1,1\n")


def _missing_evidence(root: Path) -> None:
    (root / "reports/privacy.json").unlink()


def _missing_html(root: Path) -> None:
    (root / "reports/compliance.html").unlink()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(_drop_compliance, "reports/compliance.json: not found", id="no-report"),
        pytest.param(
            _failing_gate, "gate(s) failing: fairness, data_checks; sign-off refused", id="gate"
        ),
        pytest.param(_inconsistent, "passed is false", id="passed-false"),
        pytest.param(_stale_manifest, "differ from reports/manifest.json: data.csv", id="stale"),
        pytest.param(_missing_evidence, "evidence reports/privacy.json not found", id="evidence"),
        pytest.param(_missing_html, "reports/compliance.html not found", id="no-html"),
    ],
)
def test_signoff_is_refused_while_the_evidence_does_not_pass(
    project: Path, monkeypatch: pytest.MonkeyPatch, spoil, message: str
) -> None:
    spoil(project)
    result = sign(project, "olivia", monkeypatch)
    assert result.returncode == 1, result.stdout
    error = result.stderr.strip()
    assert error.startswith("custodian: error: ") and "\n" not in error
    assert message in error, error
    assert signoff_files(project) == []
    last = list(Project(project).audit_log().entries())[-1].event
    assert last.kind is EventKind.REFUSED and message in (last.error or "")


def test_a_malformed_compliance_report_is_an_input_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-edited report is bad input (exit 2) naming the file and field, not a refusal."""
    _not_a_report(project)
    result = sign(project, "olivia", monkeypatch)
    assert result.returncode == 2, result.stdout
    error = result.stderr.strip()
    assert error.startswith("custodian: error: reports/compliance.json: passed: ")
    assert "\n" not in error
    assert signoff_files(project) == []
    last = list(Project(project).audit_log().entries())[-1].event
    assert last.kind is EventKind.COMMAND_FAILED


def test_signoff_needs_a_trusted_person_key(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sign(project, "nobody", monkeypatch).returncode == 2
    assert sign(project, "pipeline", monkeypatch).returncode == 2  # the machine's key
    revoked = invoke("keys", "revoke", "max", "--reason", "left the company", cwd=project)
    assert revoked.returncode == 0
    refused = sign(project, "max", monkeypatch)
    assert refused.returncode == 2 and "revoked" in refused.stderr
    assert signoff_files(project) == []


# --------------------------------------------------------------------------- release refusals


def test_a_corrupted_signature_is_a_bad_signature(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_signed(project, monkeypatch)
    path = signoff_files(project)[0]
    envelope = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    raw[5] ^= 0x80
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(envelope))
    result, verdict = check(project)
    assert result.returncode == 1
    assert "bad_signature" in codes(verdict) and "missing_role" in codes(verdict)
    assert path.name in verdict["reasons"][0]["message"]


def test_an_edited_statement_is_a_bad_signature(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sign(project, "olivia", monkeypatch).returncode == 0
    # Re-point the sign-off at a new model without the reviewer's key.
    model = project / "models/model.safetensors"
    model.write_bytes(b"another model")
    (path,) = signoff_files(project)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    for subject in statement["subject"]:
        if subject["name"] == "models/model.safetensors":
            subject["digest"]["sha256"] = hashlib.sha256(b"another model").hexdigest()
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))
    _, verdict = check(project)
    assert "bad_signature" in codes(verdict)
    assert "the signature does not verify with key 'olivia'" in verdict["reasons"][0]["message"]


def _forge(root: Path, signer: SigningKey, **claims: str) -> None:
    """A sign-off copied from olivia's, with ``claims`` changed, signed by ``signer``."""
    (path,) = signoff_files(root)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"].update(claims, key_fingerprint=signer.fingerprint)
    forged = sign_statement(Statement.model_validate(statement), signer)
    (root / "signoffs/forged.dsse.json").write_text(json.dumps(forged.to_json()))


def test_a_key_outside_the_trust_store_is_unknown(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sign(project, "olivia", monkeypatch).returncode == 0
    _forge(project, SigningKey.generate(), role="model-owner", reviewer="max", actor="max")
    result, verdict = check(project)
    assert result.returncode == 1
    assert codes(verdict) == ["unknown_key", "missing_role"]
    assert "forged.dsse.json: signed by key" in verdict["reasons"][0]["message"]
    assert "not in the trust store" in verdict["reasons"][0]["message"]


def test_a_statement_claiming_another_role_than_its_key_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert sign(project, "olivia", monkeypatch).returncode == 0
    olivia = load_signing_key(tmp_path / "copy/home/keys/olivia.pem")
    (project / "signoffs").joinpath("keep").mkdir()  # not a sign-off file: ignored
    _forge(project, olivia, role="model-owner", actor="someone-else")
    _, verdict = check(project)
    assert codes(verdict) == ["wrong_role", "missing_role"]
    assert "whose role in the trust store is privacy-officer" in verdict["reasons"][0]["message"]


def test_a_revoked_key_no_longer_counts(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both_signed(project, monkeypatch)
    revoked = invoke("keys", "revoke", "olivia", "--reason", "laptop stolen", cwd=project)
    assert revoked.returncode == 0, revoked.stderr
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["revoked_key"]
    assert "laptop stolen" in verdict["reasons"][0]["message"]
    statuses = {s["reviewer"]: s["status"] for s in verdict["signoffs"]}
    assert statuses == {"olivia": "rejected", "max": "current"}


def test_one_person_cannot_hold_both_roles(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTODIAN_ACTOR", "pat")
    for name in ("olivia", "max"):
        assert invoke("signoff", "--as", name, cwd=project).returncode == 0
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["same_person"]
    assert {s["status"] for s in verdict["signoffs"]} == {"current"}
    assert "'pat' signed as privacy-officer and model-owner" in verdict["reasons"][0]["message"]


def test_a_tampered_audit_log_blocks_the_release(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_signed(project, monkeypatch)
    log = Project(project).audit_log_path
    lines = log.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"olivia", b"oliver", 1)
    log.write_bytes(b"\n".join(lines))
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict)[0] == "log_tampered"
    assert verdict["reasons"][0]["message"].startswith("audit log: ")
    # The sign-offs witnessed the log before the edit: it no longer extends their heads.
    assert set(codes(verdict)[1:]) == {"log_not_extending_checkpoint"}


def test_malformed_files_and_missing_artifacts_are_reasons(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_signed(project, monkeypatch)
    (project / "signoffs/broken.dsse.json").write_text("{")
    (project / "reports/compliance.html").unlink()
    result, verdict = check(project)
    assert result.returncode == 1
    assert codes(verdict)[:2] == ["missing_artifact", "malformed_signoff"]
    assert set(codes(verdict)[2:]) == {"changed_artifact", "unbound_report"}
    assert verdict["artifacts"]["reports/compliance.html"] is None


def test_bad_usage_exits_2(project: Path) -> None:
    assert invoke("release", "check", "--bogus", cwd=project).returncode == 2
    assert invoke("signoff", cwd=project).returncode == 2  # --as is required
    long_note = invoke("signoff", "--as", "olivia", "--note", "x" * 2001, cwd=project)
    assert long_note.returncode == 2 and "at most 2000 characters" in long_note.stderr
    assert signoff_files(project) == []


# --------------------------------------------------------------------------- attacks of issue 20


def _assert_unbound(root: Path, monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    refused = sign(root, "olivia", monkeypatch)
    assert refused.returncode == 1 and signoff_files(root) == []
    assert "error: unbound_report: " in refused.stderr and message in refused.stderr
    result, verdict = check(root)
    assert result.returncode == 1 and "unbound_report" in codes(verdict)
    (reason,) = [r for r in verdict["reasons"] if r["code"] == "unbound_report"]
    assert message in reason["message"]


def test_a_failing_report_edited_to_pass_cannot_be_signed_or_released(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_compliance(project, compliance("fairness"))
    run_report_stage(project, passed=False)
    write_compliance(project, compliance())  # the attacker: every gate "passed"
    _assert_unbound(project, monkeypatch, "the latest report run failed its gates")


def test_a_report_edited_after_the_stage_is_not_bound(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project / "reports/compliance.json"
    path.write_text(path.read_text().replace('"detail": "test fixture"', '"detail": "fine"'))
    _assert_unbound(project, monkeypatch, "reports/compliance.json is not the file")
    html = project / "reports/compliance.html"
    write_compliance(project, compliance())
    html.write_text("<html><body>all green</body></html>\n")
    _assert_unbound(project, monkeypatch, "reports/compliance.html is not the file")


def test_an_older_passing_report_does_not_bind_a_newer_manifest(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = (project / "reports/compliance.json").read_bytes()
    (project / "models/model.json").write_text('{"hidden": [8]}\n')
    assert invoke("manifest", "--out", "reports/manifest.json", cwd=project).returncode == 0
    _assert_unbound(project, monkeypatch, "built for another reports/manifest.json")

    write_compliance(project, compliance("privacy_budget"))
    run_report_stage(project, passed=False)
    (project / "reports/compliance.json").write_bytes(old)  # the old, passing pack put back
    _assert_unbound(project, monkeypatch, "the latest report run failed its gates")


def _ledger_spend(root: Path, steps: int) -> None:
    """Spend budget as the train stage does: the ledger reserves, the log records it."""
    from privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(Project(root).privacy_ledger_path)
    with trail.session(Project(root), "custodian train", "train"):
        run = ledger.open_run("a" * 64, "run-1", 1.1, 0.01, "prv", 1e-5)
        run.record_steps(steps)
        trail.record_privacy_spend("a" * 64, "run-1", 1.1, 0.01, steps, "prv", 1e-5)


def test_deleting_the_log_and_the_ledger_blocks_the_release(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ledger_spend(project, 40)
    both_signed(project, monkeypatch)
    witnessed = json.loads(
        base64.b64decode(json.loads(signoff_files(project)[-1].read_text())["payload"])
    )
    size = witnessed["predicate"]["log_checkpoint"]["tree_head"]["tree_size"]
    assert size > 0
    shutil.rmtree(project / ".custodian/audit")
    Project(project).privacy_ledger_path.unlink()

    result, verdict = check(project)
    assert result.returncode == 1
    # The report's binding went with the log; the witnessed heads say why.
    assert set(codes(verdict)) == {"log_not_extending_checkpoint", "unbound_report"}
    witness = " ".join(
        r["message"] for r in verdict["reasons"] if r["code"] == "log_not_extending_checkpoint"
    )
    assert f"witnessed the log at {size} entries" in witness
    assert "truncated or rolled back" in witness
    verified = invoke("audit", "verify", cwd=project)
    assert verified.returncode == 1 and "witnessed the log at" in verified.stderr
    # The next command does not start a fresh log over what the sign-offs witnessed.
    refused = invoke("keys", "generate", "eve", "--role", "reviewer", cwd=project)
    assert refused.returncode == 1 and "the log was deleted" in refused.stderr
    assert not Project(project).audit_log_path.exists()


def test_deleting_the_ledger_alone_is_caught_by_the_checkpointed_log(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ledger_spend(project, 40)
    both_signed(project, monkeypatch)
    assert check(project)[0].returncode == 0
    Project(project).privacy_ledger_path.unlink()
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["log_tampered"]
    assert "a" * 16 in verdict["reasons"][0]["message"]  # names the dataset


def test_a_forged_log_is_not_signed_by_the_next_command(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ledger_spend(project, 40)
    both_signed(project, monkeypatch)
    audit = project / ".custodian/audit"
    lines = (audit / "log.jsonl").read_bytes().splitlines()
    spends = [n for n, line in enumerate(lines) if b'"privacy_spend"' in line]
    forged = [line for n, line in enumerate(lines) if n not in spends]  # drop the spend
    (audit / "log.jsonl").write_bytes(b"".join(line + b"\n" for line in forged))
    for name in ("checkpoint.json", "checkpoint.history.jsonl"):
        (audit / name).unlink()
    before = (audit / "log.jsonl").read_bytes()
    refused = invoke("keys", "generate", "eve", "--role", "reviewer", cwd=project)
    assert refused.returncode == 1 and "checkpoint.json is missing" in refused.stderr
    assert (audit / "log.jsonl").read_bytes() == before and not (audit / "checkpoint.json").exists()
    result, verdict = check(project)
    assert result.returncode == 1 and "log_not_extending_checkpoint" in codes(verdict)
