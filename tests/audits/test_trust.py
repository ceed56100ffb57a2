"""The trust store: named public keys with roles, checked fingerprints and revocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audits.keys import SigningKey
from audits.trust import (
    KeyAlreadyRevoked,
    KeyNameTaken,
    KeyRole,
    TrustStore,
    TrustStoreError,
    UnknownKeyName,
)


@pytest.fixture
def store(tmp_path: Path) -> TrustStore:
    return TrustStore(tmp_path / "trust")


def test_an_absent_store_is_empty_and_created_on_first_add(store: TrustStore) -> None:
    assert store.entries() == () and store.trusted_keys() == []
    key = SigningKey.generate().public_key
    entry = store.add("alice", KeyRole.REVIEWER, key)
    assert (entry.name, entry.role, entry.fingerprint) == ("alice", "reviewer", key.fingerprint)
    assert store.trusted_keys() == [key]
    assert (store.directory / "alice.pem").read_bytes() == key.to_pem()
    index = json.loads(store.index_path.read_text())
    assert index["format"] == "custodian-trust/v1" and index["keys"][0]["revoked"] is False


def test_names_and_keys_are_unique(store: TrustStore) -> None:
    key = SigningKey.generate().public_key
    store.add("alice", KeyRole.REVIEWER, key)
    with pytest.raises(KeyNameTaken, match="named 'alice'"):
        store.add("alice", KeyRole.REVIEWER, SigningKey.generate().public_key)
    with pytest.raises(KeyNameTaken, match="already in the trust store as 'alice'"):
        store.add("bob", KeyRole.RELEASE, key)
    with pytest.raises(TrustStoreError, match="key name"):
        store.add("../evil", KeyRole.RELEASE, SigningKey.generate().public_key)


def test_ensure_is_idempotent_and_tells_two_users_keys_apart(store: TrustStore) -> None:
    mine, theirs = SigningKey.generate().public_key, SigningKey.generate().public_key
    first = store.ensure("pipeline", KeyRole.PIPELINE, mine)
    assert store.ensure("pipeline", KeyRole.PIPELINE, mine) == first
    other = store.ensure("pipeline", KeyRole.PIPELINE, theirs)
    assert other.name == f"pipeline-{theirs.fingerprint[:12]}"
    assert set(store.trusted_keys()) == {mine, theirs}


def test_a_revoked_key_is_listed_but_not_trusted(store: TrustStore) -> None:
    key = SigningKey.generate().public_key
    store.add("alice", KeyRole.REVIEWER, key)
    revoked = store.revoke("alice", "laptop  stolen\n2026-11-20")
    assert revoked.revoked and revoked.revoked_reason == "laptop stolen 2026-11-20"
    assert store.trusted_keys() == []
    assert [(entry.name, public) for entry, public in store.revoked()] == [("alice", key)]
    with pytest.raises(KeyAlreadyRevoked):
        store.revoke("alice", "again")
    with pytest.raises(UnknownKeyName):
        store.revoke("nobody", "no such key")


def test_a_swapped_public_key_file_is_refused(store: TrustStore) -> None:
    store.add("alice", KeyRole.REVIEWER, SigningKey.generate().public_key)
    (store.directory / "alice.pem").write_bytes(SigningKey.generate().public_key.to_pem())
    with pytest.raises(TrustStoreError, match="refusing to trust it"):
        store.trusted_keys()


def test_a_hand_edited_index_is_refused(store: TrustStore) -> None:
    store.add("alice", KeyRole.REVIEWER, SigningKey.generate().public_key)
    index = json.loads(store.index_path.read_text())
    index["keys"][0]["revoked"] = True  # revoked without saying when or why
    store.index_path.write_text(json.dumps(index))
    with pytest.raises(TrustStoreError, match="not a trust store index"):
        store.entries()


def test_roles_are_spelt_as_on_the_command_line_and_old_spellings_still_load(
    store: TrustStore,
) -> None:
    store.add("alice", KeyRole.PRIVACY_OFFICER, SigningKey.generate().public_key)
    store.add("bob", KeyRole.MODEL_OWNER, SigningKey.generate().public_key)
    index = json.loads(store.index_path.read_text())
    assert [key["role"] for key in index["keys"]] == ["privacy-officer", "model-owner"]
    index["keys"][0]["role"] = "privacy_officer"  # as stores written before the rename say
    store.index_path.write_text(json.dumps(index))
    assert store.get("alice").role is KeyRole.PRIVACY_OFFICER
    index["keys"][0]["role"] = "privacy officer"
    store.index_path.write_text(json.dumps(index))
    with pytest.raises(TrustStoreError, match="keys.0.role"):
        store.entries()
    assert [role.is_person for role in KeyRole] == [False, True, True, True, True, True]
    # Administering trust is a person's job, but not one that signs off a release.
    assert [role.signs_off for role in KeyRole] == [False, True, True, True, True, False]
