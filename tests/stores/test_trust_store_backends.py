"""The local trust store through the store: the same rules on local files and on a real
PostgreSQL server (tests/stores/pgserver.py), a second clone trusting the first clone's
pipeline key, and records appended behind the store's back that try to swap a key or
undo a revocation refused. The file store's own behaviour is tested in tests/audits.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audits.canonical import canonical_bytes
from audits.keys import SigningKey
from audits.trust import (
    KeyAlreadyRevoked,
    KeyNameTaken,
    KeyRole,
    TrustStore,
    TrustStoreError,
    UnknownKeyName,
)
from stores import config
from stores.select import open_stream
from tests.stores.conftest import PgProject


def _store(directory: Path) -> TrustStore:
    """The local trust store of the checkout whose evidence directory is ``directory``."""
    return TrustStore(directory / "trust", store_dir=directory)


def test_the_trust_store_keeps_its_rules_on_both_backends(store_dir: Path) -> None:
    store = _store(store_dir)
    assert store.entries() == () and store.trusted_keys() == []
    first, second = SigningKey.generate(), SigningKey.generate()
    added = store.ensure("pipeline", KeyRole.PIPELINE, first.public_key)
    assert store.ensure("pipeline", KeyRole.PIPELINE, first.public_key) == added
    other = store.ensure("pipeline", KeyRole.PIPELINE, second.public_key)
    assert other.name == f"pipeline-{second.fingerprint[:12]}"
    with pytest.raises(KeyNameTaken):
        store.add("pipeline", KeyRole.PIPELINE, SigningKey.generate().public_key)
    with pytest.raises(KeyNameTaken):
        store.add("again", KeyRole.PIPELINE, first.public_key)
    reopened = _store(store_dir)
    assert reopened.entries() == store.entries() == tuple(sorted((added, other), key=_name))
    assert {key.fingerprint for key in reopened.trusted_keys()} == {
        first.fingerprint,
        second.fingerprint,
    }
    revoked = reopened.revoke("pipeline", "laptop  lost")
    assert revoked.revoked and revoked.revoked_reason == "laptop lost"
    with pytest.raises(KeyAlreadyRevoked):
        store.revoke("pipeline", "again")
    with pytest.raises(UnknownKeyName):
        store.revoke("nobody", "no such key")
    assert [key.fingerprint for key in store.trusted_keys()] == [second.fingerprint]
    assert [(entry, key.fingerprint) for entry, key in store.revoked()] == [
        (revoked, first.fingerprint)
    ]
    # The server's store writes nothing into the directory; the file store does.
    on_disk = (store_dir / "trust" / "index.json").exists()
    assert on_disk == (config.load(store_dir) is None)


def _name(entry: Any) -> str:
    return entry.name


def test_a_second_clone_trusts_the_first_clones_pipeline_key(
    pg_project: PgProject, tmp_path: Path
) -> None:
    alice, bob = (tmp_path / name / ".custodian" for name in ("alice", "bob"))
    for directory in (alice, bob):
        directory.mkdir(parents=True)
        pg_project.use(directory)
    alices, bobs = SigningKey.generate(), SigningKey.generate()
    _store(alice).ensure("pipeline", KeyRole.PIPELINE, alices.public_key)
    # Bob's pipeline key has the same name on his machine: the fingerprint tells them apart.
    bobs_entry = _store(bob).ensure("pipeline", KeyRole.PIPELINE, bobs.public_key)
    assert bobs_entry.name == f"pipeline-{bobs.fingerprint[:12]}"
    for directory in (alice, bob):
        assert {key.fingerprint for key in _store(directory).trusted_keys()} == {
            alices.fingerprint,
            bobs.fingerprint,
        }
    _store(bob).revoke("pipeline", "alice left")
    assert [k.fingerprint for k in _store(alice).trusted_keys()] == [bobs.fingerprint]
    # A reviewer's clone reads the same keys and can change nothing.
    reviewer = tmp_path / "reviewer" / ".custodian"
    reviewer.mkdir(parents=True)
    pg_project.use(reviewer, pg_project.reviewer)
    assert _store(reviewer).entries() == _store(alice).entries()
    with pytest.raises(Exception, match="permission denied"):
        _store(reviewer).ensure("pipeline", KeyRole.PIPELINE, SigningKey.generate().public_key)


def _event(action: str, key: dict[str, Any], pem: bytes | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"format": "custodian-trust-event/v1", "action": action, "key": key}
    if pem is not None:
        event["pem"] = pem.decode("ascii")
    return event


def _record(name: str, signer: SigningKey, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "role": "pipeline",
        "fingerprint": signer.fingerprint,
        "added": "2026-01-01T00:00:00Z",
        "revoked": False,
        "revoked_at": None,
        "revoked_reason": None,
        **changes,
    }


REVOKED = {"revoked": True, "revoked_at": "2026-01-02T00:00:00Z", "revoked_reason": "stolen"}

# What a writer could append to the stream directly, bypassing TrustStore's checks, after
# the store's own add of ``pipeline`` (and, for some, its revocation).
FORGERIES: dict[str, Callable[[SigningKey, SigningKey, dict[str, Any]], list[dict[str, Any]]]] = {
    "a second key under the same name": lambda mine, theirs, rec: [
        _event("add", _record("pipeline", theirs), theirs.public_key.to_pem())
    ],
    "the same key under a new name, after its revocation": lambda mine, theirs, rec: [
        _event("revoke", {**rec, **REVOKED}),
        _event("add", _record("fresh", mine), mine.public_key.to_pem()),
    ],
    "a PEM that is not the record's key": lambda mine, theirs, rec: [
        _event("add", _record("swapped", mine, fingerprint="ab" * 32), theirs.public_key.to_pem())
    ],
    "a revocation that changes the role": lambda mine, theirs, rec: [
        _event("revoke", {**rec, **REVOKED, "role": "privacy-officer"})
    ],
    "a revocation of a revoked key": lambda mine, theirs, rec: [
        _event("revoke", {**rec, **REVOKED}),
        _event("revoke", {**rec, **REVOKED, "revoked_reason": "again"}),
    ],
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_records_appended_behind_the_stores_back_are_refused(
    forgery: str, pg_project: PgProject, tmp_path: Path
) -> None:
    directory = tmp_path / ".custodian"
    directory.mkdir()
    pg_project.use(directory)
    mine, theirs = SigningKey.generate(), SigningKey.generate()
    entry = _store(directory).ensure("pipeline", KeyRole.PIPELINE, mine.public_key)
    record = entry.model_dump(mode="json")
    stream = open_stream(directory / "trust" / "events.jsonl", None, root=directory)
    events = FORGERIES[forgery](mine, theirs, record)
    with stream.session() as session:
        for event in events:
            line = canonical_bytes(event)
            session.append([lambda seq, prev, line=line: line])
    store = _store(directory)
    # The store's own add is record 0; the last forged record is the one refused.
    with pytest.raises(TrustStoreError, match=f"record {len(events)}[ :]"):
        store.trusted_keys()
    with pytest.raises(TrustStoreError):
        store.ensure("pipeline", KeyRole.PIPELINE, theirs.public_key)
