"""The trust root's rules, checked on chains built directly, and its signatures checked with
``cryptography`` on the DSSE pre-authentication encoding, independently of audits.dsse."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from audits.keys import SigningKey
from audits.trust import KeyRole, TrustedKey
from audits.trust_root import (
    ROOT_PAYLOAD_TYPE,
    Root,
    RootKey,
    RootKeySet,
    SignedRoot,
    TrustRoot,
    TrustRootError,
    by_fingerprint,
    verify_chain,
    with_key,
    without_key,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=365)


def _key(name: str, role: KeyRole) -> tuple[SigningKey, RootKey]:
    signing = SigningKey.generate()
    record = RootKey(
        name=name, role=role, public_key=signing.public_key.to_pem().decode(), added=NOW
    )
    return signing, record


@pytest.fixture
def admins() -> list[tuple[SigningKey, RootKey]]:
    return [_key(name, KeyRole.TRUST_ADMIN) for name in ("ada", "bob", "cy")]


@pytest.fixture
def v1(admins) -> SignedRoot:
    _, olivia = _key("olivia", KeyRole.PRIVACY_OFFICER)
    root = Root(
        version=1,
        expires=LATER,
        threshold=2,
        administrators=by_fingerprint(record for _, record in admins),
        keys=by_fingerprint([olivia]),
    )
    signed = SignedRoot(root=root)
    signed.sign(admins[0][0])
    signed.sign(admins[1][0])
    return signed


def _next(previous: Root, **changes) -> SignedRoot:
    return SignedRoot(root=previous.model_copy(update={"version": previous.version + 1, **changes}))


def test_signatures_are_dsse_over_the_canonical_root(v1: SignedRoot, admins) -> None:
    envelope = json.loads(v1.text())
    payload = base64.b64decode(envelope["payload"])
    assert envelope["payloadType"] == ROOT_PAYLOAD_TYPE
    assert payload == v1.root.payload()
    # DSSE's PAE, written out here rather than imported.
    pae = b"DSSEv1 %d %s %d %s" % (
        len(ROOT_PAYLOAD_TYPE),
        ROOT_PAYLOAD_TYPE.encode(),
        len(payload),
        payload,
    )
    for signature, (_, record) in zip(envelope["signatures"], admins[:2], strict=True):
        public = load_pem_public_key(record.public_key.encode())
        public.verify(base64.b64decode(signature["sig"]), pae)  # raises if it does not verify


def test_threshold_signatures_of_the_previous_and_own_administrators(v1, admins) -> None:
    assert verify_chain([v1], NOW).ok
    lone = SignedRoot(root=v1.root)
    lone.sign(admins[0][0])
    assert (
        "1 of its own administrators signed it, its threshold is 2"
        in (verify_chain([lone], NOW).problems[0])
    )
    # The same administrator signing twice is still one.
    lone.signatures.append(lone.signatures[0])
    assert not verify_chain([lone], NOW).ok

    mallory, admin = _key("mallory", KeyRole.TRUST_ADMIN)
    takeover = _next(v1.root, threshold=1, administrators=by_fingerprint([admin]))
    takeover.sign(mallory)
    takeover.sign(admins[0][0])  # one stolen old administrator key
    review = verify_chain([v1, takeover], NOW)
    assert review.trusted == v1.root  # the last good version, as TUF keeps it
    assert "1 of version 1's administrators signed it" in review.problems[0]
    takeover.sign(admins[2][0])
    assert verify_chain([v1, takeover], NOW).ok


def test_revocation_is_permanent_and_versions_are_consecutive(v1, admins) -> None:
    now = NOW + timedelta(hours=1)
    v2 = SignedRoot(root=without_key(_next(v1.root).root, "olivia", "lost laptop", now, LATER))
    for signing, _ in admins[:2]:
        v2.sign(signing)
    assert verify_chain([v1, v2], NOW).ok
    (gone,) = v2.root.revoked.values()
    assert gone.name == "olivia" and gone.reason == "lost laptop"
    with pytest.raises(TrustRootError, match="revocation is permanent"):
        with_key(v2.root, RootKey(**gone.model_dump(include=set(RootKey.model_fields))), LATER)
    with pytest.raises(ValueError, match="a revoked key is listed as trusted"):
        Root.model_validate(
            {
                **v2.root.model_dump(),
                "keys": {gone.fingerprint: gone.model_dump(include=set(RootKey.model_fields))},
            }
        )

    undo = _next(v2.root, revoked={})
    for signing, _ in admins:
        undo.sign(signing)
    assert "un-revokes olivia" in verify_chain([v1, v2, undo], NOW).problems[0]

    skipped = SignedRoot(root=v2.root.model_copy(update={"version": 3}))
    for signing, _ in admins[:2]:
        skipped.sign(signing)
    assert "root version 2 says it is version 3" in verify_chain([v1, skipped], NOW).problems[0]


def test_an_expired_newest_version_is_a_problem(v1) -> None:
    assert verify_chain([v1], LATER - timedelta(seconds=1)).ok
    assert "expired" in verify_chain([v1], LATER).problems[0]


def test_the_key_set_trusts_only_the_root_and_any_revocation(v1) -> None:
    (fingerprint, olivia) = next(iter(v1.root.keys.items()))
    keys = RootKeySet(v1.root)
    assert keys.get("olivia").fingerprint == fingerprint and not keys.get("olivia").revoked
    assert keys.public_key(keys.get("olivia")).fingerprint == fingerprint
    local = TrustedKey(
        name="olivia",
        role=KeyRole.PRIVACY_OFFICER,
        fingerprint=fingerprint,
        added=NOW,
        revoked=True,
        revoked_at=NOW,
        revoked_reason="left",
    )
    assert RootKeySet(v1.root, {fingerprint: local}).get("olivia").revoked
    assert RootKeySet(None).entries() == ()


def test_files_must_agree_and_hand_edits_are_reported(tmp_path: Path, v1) -> None:
    files = TrustRoot(tmp_path / "trust")
    assert files.review(NOW).problems == ("no trust root (custodian trust init)",)
    files.write(v1)
    assert files.review(NOW).ok
    (tmp_path / "trust/root.json").write_text(v1.text().replace('"payload"', '"payload" '))
    assert "not the newest version" in files.review(NOW).problems[0]
    files.write(v1)
    (tmp_path / "trust/root/1.json").unlink()
    assert "not the newest version" in files.review(NOW).problems[0]
