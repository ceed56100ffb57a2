"""The root of trust (issue 20, attack 5): keys count only when k of n administrators signed them.

Same hand-built project as the sign-off tests: olivia (privacy-officer) and max
(model-owner) are in root version 1, signed by both trust administrators, ada
and bob (threshold 2). Attacks are made as an attacker with write access to
the project would: by hand-editing files, or with the library's own signing
code and keys the attacker made.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audits.keys import SigningKey, load_signing_key
from audits.trust import KeyRole
from audits.trust_root import RootKey, SignedRoot, TrustRoot, by_fingerprint
from custodian.project import Project, private_key_path
from tests.custodian.test_audit_cli import invoke
from tests.custodian.test_signoff_cli import (
    _forge,
    both_signed,
    check,
    codes,
    project,
    reviewed_base,
    sign,
    signoff_files,
)

__all__ = ["project", "reviewed_base"]  # fixtures shared with the sign-off tests


def _root(root: Path) -> TrustRoot:
    return TrustRoot(root / "trust")


def _publish_forged(root: Path, signed: SignedRoot, *signers: SigningKey) -> None:
    for key in signers:
        signed.sign(key)
    _root(root).write(signed)


def _reasons(verdict: dict, code: str) -> str:
    return " ".join(r["message"] for r in verdict["reasons"] if r["code"] == code)


def test_the_fixture_root_verifies_and_opens_the_gate(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = json.loads(invoke("trust", "status", "--json", cwd=project).stdout)
    assert status == {
        "ok": True,
        "problems": [],
        "version": 1,
        "keys": ["max", "olivia"],
        "revoked": [],
    }
    both_signed(project, monkeypatch)
    assert check(project)[0].returncode == 0


def test_keys_added_by_hand_do_not_let_one_person_release_alone(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One person makes two keys, one per role: in the committed store, not in the root.
    for name, role in (("pat-po", "privacy-officer"), ("pat-mo", "model-owner")):
        assert invoke("keys", "generate", name, "--role", role, cwd=project).returncode == 0
        refused = sign(project, name, monkeypatch)
        assert refused.returncode == 2
        assert f"no key named {name!r} in the trust root" in refused.stderr
    assert signoff_files(project) == []
    # Signing with the library anyway: the gate does not know these keys.
    assert sign(project, "olivia", monkeypatch).returncode == 0
    _forge(
        project, load_signing_key(private_key_path("pat-mo")), reviewer="pat-mo", role="model-owner"
    )
    result, verdict = check(project)
    assert result.returncode == 1 and "unknown_key" in codes(verdict)
    assert "counted" not in {s["status"] for s in verdict["signoffs"]}


def test_a_hand_edited_root_is_an_untrusted_key_set(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_signed(project, monkeypatch)
    eve = SigningKey.generate()
    current = _root(project).versions()[-1]
    added = RootKey(
        name="eve",
        role=KeyRole.MODEL_OWNER,
        public_key=eve.public_key.to_pem().decode(),
        added=datetime.now(UTC),
    )
    forged = current.root.model_copy(
        update={"keys": {**current.root.keys, **by_fingerprint([added])}}
    )
    # Only root.json edited: it is no longer the newest version on record.
    text = SignedRoot(root=forged, signatures=current.signatures).text()
    (project / "trust/root.json").write_text(text)
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict)[0] == "untrusted_key_set"
    assert "not the newest version" in _reasons(verdict, "untrusted_key_set")
    # Both copies edited: the administrators' signatures no longer verify.
    (project / "trust/root/1.json").write_text(text)
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict)[0] == "untrusted_key_set"
    assert "0 of its own administrators signed it" in _reasons(verdict, "untrusted_key_set")
    refused = sign(project, "olivia", monkeypatch)
    assert refused.returncode == 1 and "untrusted_key_set" in refused.stderr


def test_a_new_version_needs_the_previous_administrators(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_signed(project, monkeypatch)
    mallory = SigningKey.generate()
    admin = RootKey(
        name="mallory",
        role=KeyRole.TRUST_ADMIN,
        public_key=mallory.public_key.to_pem().decode(),
        added=datetime.now(UTC),
    )
    current = _root(project).versions()[-1].root
    takeover = current.model_copy(
        update={"version": 2, "threshold": 1, "administrators": by_fingerprint([admin])}
    )
    _publish_forged(project, SignedRoot(root=takeover), mallory)
    result, verdict = check(project)
    assert result.returncode == 1 and "untrusted_key_set" in codes(verdict)
    assert "0 of version 1's administrators signed it" in _reasons(verdict, "untrusted_key_set")
    # One stolen administrator key is not enough either.
    ada = load_signing_key(private_key_path("ada"))
    _publish_forged(project, SignedRoot(root=takeover), mallory, ada)
    result, verdict = check(project)
    assert "1 of version 1's administrators signed it" in _reasons(verdict, "untrusted_key_set")


def test_revocation_is_permanent(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both_signed(project, monkeypatch)
    revoke = ("trust", "revoke", "max", "--reason", "laptop stolen", "--as", "ada")
    assert invoke(*revoke, cwd=project).returncode == 0
    # Proposed but not yet approved: version 2 lacks bob's signature.
    result, verdict = check(project)
    assert "untrusted_key_set" in codes(verdict)
    assert "1 of its own administrators signed it" in _reasons(verdict, "untrusted_key_set")
    assert invoke("trust", "sign", "--as", "bob", cwd=project).returncode == 0
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["revoked_key"]
    assert "laptop stolen" in verdict["reasons"][0]["message"]

    # The attack on the old store: revoked in the index, then set back to false by hand.
    # The root's revocation stands.
    assert invoke("keys", "revoke", "max", "--reason", "stolen", cwd=project).returncode == 0
    index = project / "trust/index.json"
    data = json.loads(index.read_text())
    for key in data["keys"]:
        key.update(revoked=False, revoked_at=None, revoked_reason=None)
    index.write_text(json.dumps(data))
    assert codes(check(project)[1]) == ["revoked_key"]

    # Adding it back is refused, and a version that drops the revocation, even if both
    # administrators sign it, is not a valid successor.
    again = invoke("trust", "add", "max", "--as", "ada", cwd=project)
    assert again.returncode == 1 and "revocation is permanent" in again.stderr
    latest = _root(project).versions()[-1].root
    fingerprint = next(iter(latest.revoked))
    gone = latest.revoked[fingerprint]
    restored = latest.model_copy(
        update={
            "version": 3,
            "revoked": {},
            "keys": {
                **latest.keys,
                fingerprint: RootKey(**gone.model_dump(include=set(RootKey.model_fields))),
            },
        }
    )
    admins = [load_signing_key(private_key_path(name)) for name in ("ada", "bob")]
    _publish_forged(project, SignedRoot(root=restored), *admins)
    result, verdict = check(project)
    assert "un-revokes max; revocation is permanent" in _reasons(verdict, "untrusted_key_set")


def test_added_keys_count_once_approved_and_an_expired_root_does_not(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("keys", "generate", "mo2", "--role", "model-owner", cwd=project).returncode == 0
    assert invoke("trust", "add", "mo2", "--as", "bob", cwd=project).returncode == 0
    assert invoke("trust", "sign", "--as", "ada", cwd=project).returncode == 0
    status = json.loads(invoke("trust", "status", "--json", cwd=project).stdout)
    assert status["ok"] and status["version"] == 2 and status["keys"] == ["max", "mo2", "olivia"]
    assert sign(project, "olivia", monkeypatch).returncode == 0
    assert sign(project, "mo2", monkeypatch).returncode == 0
    assert check(project)[0].returncode == 0
    logged = [
        e.event.details
        for e in Project(project).audit_log().entries()
        if "trust_root_key_added" in e.event.details
    ]
    assert logged and logged[0]["trust_root_key_added"]["name"] == "mo2"

    versions = _root(project).versions()
    expired = versions[-1].root.model_copy(
        update={"version": 3, "expires": datetime.now(UTC) - timedelta(days=1)}
    )
    admins = [load_signing_key(private_key_path(name)) for name in ("ada", "bob")]
    _publish_forged(project, SignedRoot(root=expired), *admins)
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["untrusted_key_set"]
    assert "root version 3 expired" in verdict["reasons"][0]["message"]


def test_without_a_root_nothing_is_released(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both_signed(project, monkeypatch)
    (project / "trust/root.json").unlink()
    for version in (project / "trust/root").iterdir():
        version.unlink()
    result, verdict = check(project)
    assert result.returncode == 1 and codes(verdict) == ["untrusted_key_set"]
    assert "no trust/root.json" in verdict["reasons"][0]["message"]
