"""`custodian attest` and the attestations `release check` requires (policy.required_attestations).

Same hand-built project as the sign-off tests (a model, a compliance report, a manifest, two
reviewers' keys); forgeries are made as an attacker would, by editing files or signing with a
key the trust store does not hold.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from audits.attestation import AttestationPredicate, sign_attestation
from audits.keys import SigningKey
from audits.log import EventKind
from custodian.project import Project
from tests.custodian.test_audit_cli import Result, invoke
from tests.custodian.test_signoff_cli import both_signed, check, codes, project, reviewed_base

__all__ = ["project", "reviewed_base"]  # fixtures shared with the sign-off tests

REQUIRED = ["GOVERN 2.2", "MEASURE 2.11"]


def require(root: Path, *subcategories: str) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["policy"]["required_attestations"] = list(subcategories)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def attest(
    root: Path,
    subcategory: str,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    note: str | None = "done",
) -> Result:
    monkeypatch.setenv("CUSTODIAN_ACTOR", f"{name}@example.org")
    extra = ("--note", note) if note is not None else ()
    return invoke("attest", subcategory, "--as", name, *extra, cwd=root)


def attestation_files(root: Path) -> list[Path]:
    return sorted((root / "attestations").glob("*.dsse.json"))


def test_release_waits_for_each_required_attestation(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(project, *REQUIRED)
    both_signed(project, monkeypatch)
    result, verdict = check(project)
    assert result.returncode == 1
    assert codes(verdict) == ["missing_attestation", "missing_attestation"]
    assert "GOVERN 2.2: no current attestation" in verdict["reasons"][0]["message"]
    assert verdict["required_attestations"] == REQUIRED

    note = "all reviewers completed the AI risk course (LMS report 2026-11)"
    assert attest(project, "govern 2.2", "olivia", monkeypatch, note).returncode == 0
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["missing_attestation"]
    assert "MEASURE 2.11" in verdict["reasons"][0]["message"]

    attested = attest(project, "MEASURE 2.11", "max", monkeypatch, "slice gaps reviewed")
    assert attested.returncode == 0, attested.stderr
    result, verdict = check(project)
    assert result.returncode == 0, verdict["reasons"]
    assert {(a["subcategory"], a["attester"], a["status"]) for a in verdict["attestations"]} == {
        ("GOVERN 2.2", "olivia", "counted"),
        ("MEASURE 2.11", "max", "counted"),
    }
    human = invoke("release", "check", cwd=project)
    assert "attested: GOVERN 2.2, MEASURE 2.11" in human.stdout

    # The attestation is an audit event, and its statement names who, what and when.
    events = list(Project(project).audit_log().entries())
    logged = [e.event.details["attestation"] for e in events if "attestation" in e.event.details]
    assert [a["subcategory"] for a in logged] == REQUIRED and logged[0]["note"] == note
    assert all(
        e.event.kind is EventKind.DECISION for e in events if "attestation" in e.event.details
    )
    governance = json.loads(attestation_files(project)[0].read_text())
    statement = json.loads(base64.b64decode(governance["payload"]))
    assert statement["predicateType"] == "https://custodian.invalid/attestation/v1"
    assert statement["predicate"]["subcategory"] == "GOVERN 2.2"
    # An organisational subcategory binds its wording only; MEASURE 2.11 binds the model too.
    assert [s["name"] for s in statement["subject"]] == ["nist-ai-rmf:GOVERN 2.2"]


def test_a_retrained_model_needs_a_new_measure_attestation(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(project, *REQUIRED)
    for subcategory, name in zip(REQUIRED, ("olivia", "max"), strict=True):
        # SPEC's form: --note is optional.
        assert attest(project, subcategory, name, monkeypatch, note=None).returncode == 0
    model = project / "models/model.safetensors"
    model.write_bytes(model.read_bytes()[::-1])
    _, verdict = check(project)
    missing = [r["message"] for r in verdict["reasons"] if r["code"] == "missing_attestation"]
    assert len(missing) == 1 and missing[0].startswith("MEASURE 2.11: no current attestation")
    assert "latest stale: signed another model" in missing[0]


def test_forged_or_edited_attestations_do_not_count(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(project, "GOVERN 2.2")
    both_signed(project, monkeypatch)
    assert attest(project, "GOVERN 2.2", "olivia", monkeypatch).returncode == 0
    (path,) = attestation_files(project)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["note"] = "something the attester never wrote"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))
    result, verdict = check(project)
    assert result.returncode == 1
    assert codes(verdict) == ["bad_signature", "missing_attestation"]

    # Signed by a key outside the trust store: unknown, whatever it claims.
    stranger = SigningKey.generate()
    predicate = dict(statement["predicate"], key_fingerprint=stranger.fingerprint)
    forged = sign_attestation(
        {s["name"]: s["digest"]["sha256"] for s in statement["subject"]},
        AttestationPredicate.model_validate(predicate),
        stranger,
    )
    path.write_text(json.dumps(forged.to_json()))
    _, verdict = check(project)
    assert codes(verdict) == ["unknown_key", "missing_attestation"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("MAP 2.1", "--as", "olivia", "--note", "x"), "nothing to attest"),
        (("GOVERN 9.9", "--as", "olivia", "--note", "x"), "not a subcategory"),
        (("GOVERN 2.2", "--as", "olivia", "--note", "x" * 2001), "at most 2000 characters"),
        (("GOVERN 2.2", "--as", "nobody", "--note", "x"), "no key named 'nobody'"),
    ],
)
def test_bad_attestations_are_usage_errors(project: Path, args: tuple[str, ...], message) -> None:
    result = invoke("attest", *args, cwd=project)
    assert result.returncode == 2 and message in result.stderr
    assert attestation_files(project) == []


def test_required_attestations_must_name_subcategories_a_person_can_attest(
    project: Path,
) -> None:
    require(project, "MAP 2.1")  # fully evidenced by the pipeline: nothing for a person to add
    result = invoke("release", "check", cwd=project)
    assert result.returncode == 2
    assert "required_attestations: 'MAP 2.1' is not a subcategory that needs a person" in (
        result.stderr
    )
