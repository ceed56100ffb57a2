"""The trust store: the public keys a project accepts signatures from, with roles and revocation.

Layout of the store's directory:

``index.json``
    ``{"format": "custodian-trust/v1", "keys": [...]}``: one record per key (name,
    role, fingerprint, time added, revoked flag, and when and why it was revoked),
    sorted by name. Replaced atomically under ``.lock``.
``<name>.pem``
    The key's SubjectPublicKeyInfo PEM. Its fingerprint is checked against the
    index every time it is loaded, so a swapped file is refused, not trusted.

Both are read as store files (:mod:`stores.files`): a link, or anything but a
regular file the user owns, is refused.

With ``store_dir`` given and a PostgreSQL store configured there (:mod:`stores.select`),
the store is instead the record stream ``<directory below store_dir>-events`` in the
server: one record per change, ``add`` (the key's record and its PEM) or ``revoke``
(the revoked record), appended under the stream's lock. The index is their replay,
which refuses a key added twice, a PEM whose fingerprint is not its record's, and a
revocation that changes anything but the revocation fields, so nothing appended later
can swap a key or undo a revocation. The CLI keeps the local (pipeline) store there, so
every clone sharing the server trusts every pipeline key that signs the shared log.

Only public keys live here. Whoever can add a key to the store can sign
what verifies against it, so people's keys count only once the signed trust
root (:mod:`audits.trust_root`) lists them; this store holds their PEMs until
then, and its revocations still apply. The store is committed, its changes
read in review; the CLI keeps one there and a second, local one for the
pipeline keys that sign a checkout's own audit log
(:mod:`custodian.project`). Checkpoints exported outside the project (see
:mod:`audits.log`) remain the defence against someone who rewrites the log,
its checkpoints and the store together.

Roles are spelt as on the command line (``privacy-officer``); an index written
when they were spelt with underscores still loads.

Revocation is permanent and fails closed: a revoked key verifies nothing,
including what it signed before it was revoked, because a key is revoked when
it can no longer be trusted, and a leaked key's old signatures can be forged
as easily as new ones. Revoking the key that signed a log's checkpoints makes
that log fail verification until it is re-anchored; that is the point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Protocol

from filelock import FileLock
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from audits.canonical import canonical_bytes
from audits.errors import AuditError
from audits.files import atomic_write_bytes, atomic_write_json
from audits.keys import PublicKey, SigningKeyError, load_public_key
from stores.files import read_store_file
from stores.postgres import PostgresStream
from stores.select import open_stream
from stores.stream import LocalStream, RecordStream, StreamSession

TRUST_FORMAT = "custodian-trust/v1"
EVENT_FORMAT = "custodian-trust-event/v1"
INDEX_NAME = "index.json"
# The record file a server store's stream is named after (no such file is written).
EVENTS_NAME = "events.jsonl"

# Names become file names (<name>.pem here, and private key files elsewhere).
KeyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class TrustStoreError(AuditError):
    """The trust store is unreadable, inconsistent, or cannot do what was asked."""


class KeyNameTaken(TrustStoreError):
    """A key with this name (or this public key under another name) is already in the store."""


class UnknownKeyName(TrustStoreError):
    """No key of this name is in the store."""


class KeyAlreadyRevoked(TrustStoreError):
    """The key is already revoked; revocation is permanent and happens once."""


class KeyRole(StrEnum):
    """What a key is trusted to sign: the pipeline's audit checkpoints, or a person's sign-off."""

    PIPELINE = "pipeline"
    REVIEWER = "reviewer"
    PRIVACY_OFFICER = "privacy-officer"
    MODEL_OWNER = "model-owner"
    RELEASE = "release"
    TRUST_ADMIN = "trust-admin"

    @classmethod
    def _missing_(cls, value: object) -> KeyRole | None:
        # Stores written before roles were spelt as on the command line say "privacy_officer".
        if isinstance(value, str) and "_" in value:
            return next((role for role in cls if role.value == value.replace("_", "-")), None)
        return None

    @property
    def is_person(self) -> bool:
        """A person's key (kept in the committed store), as opposed to the pipeline's own."""
        return self is not KeyRole.PIPELINE

    @property
    def signs_off(self) -> bool:
        """May sign off a release or attest: a person's role other than administering trust."""
        return self.is_person and self is not KeyRole.TRUST_ADMIN


class KeySet(Protocol):
    """Where sign-offs and attestations look their signers up: the trust store, or the
    verified trust root (:mod:`audits.trust_root`)."""

    def entries(self) -> tuple[TrustedKey, ...]: ...

    def get(self, name: str) -> TrustedKey: ...

    def by_fingerprint(self, fingerprint: str) -> TrustedKey | None: ...

    def public_key(self, entry: TrustedKey) -> PublicKey: ...


class TrustedKey(BaseModel):
    """One record of the index: a named public key with its role and revocation status."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: KeyName
    role: KeyRole
    fingerprint: Fingerprint
    added: AwareDatetime
    revoked: bool = False
    revoked_at: AwareDatetime | None = None
    revoked_reason: str | None = None

    @model_validator(mode="after")
    def _revocation_is_complete(self) -> TrustedKey:
        has_details = self.revoked_at is not None and bool(self.revoked_reason)
        if self.revoked != has_details:
            raise ValueError("a revoked key needs revoked_at and revoked_reason, others neither")
        return self


class _Index(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-trust/v1"] = TRUST_FORMAT
    keys: tuple[TrustedKey, ...] = Field(default_factory=tuple)

    @model_validator(mode="after")
    def _unique(self) -> _Index:
        names = [key.name for key in self.keys]
        fingerprints = [key.fingerprint for key in self.keys]
        if len(set(names)) != len(names) or len(set(fingerprints)) != len(fingerprints):
            raise ValueError("names and fingerprints must be unique")
        return self


class TrustStore:
    """The trust store in ``directory`` (nothing is created until a key is added)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        store_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.index_path = self.directory / INDEX_NAME
        self._lock = FileLock(self.directory / ".lock")
        self._stream: _EventStream | None = None
        if store_dir is not None:
            stream = open_stream(self.directory / EVENTS_NAME, None, root=Path(store_dir))
            self._stream = _KEPT_IN[stream.backend](stream)

    def __repr__(self) -> str:
        return f"TrustStore({str(self.directory)!r})"

    @property
    def where(self) -> str:
        """Where the store lives, for messages: its directory, or a server stream."""
        return self._stream.label if self._stream is not None else str(self.directory)

    # ---- reading

    def entries(self) -> tuple[TrustedKey, ...]:
        """Every key record, revoked ones included, sorted by name."""
        return self._read().keys

    def get(self, name: str) -> TrustedKey:
        """The record named ``name``; :class:`UnknownKeyName` if there is none."""
        for entry in self.entries():
            if entry.name == name:
                return entry
        raise UnknownKeyName(f"no key named {name!r} in the trust store {self.where}")

    def by_fingerprint(self, fingerprint: str) -> TrustedKey | None:
        """The record of the key with ``fingerprint``, revoked or not, if the store has one."""
        return next((e for e in self.entries() if e.fingerprint == fingerprint), None)

    def public_key(self, entry: TrustedKey) -> PublicKey:
        """The PEM of ``entry``, refused unless its fingerprint is the one the index records."""
        if self._stream is not None:
            return self._stream.public_key(entry)
        path = self._pem_path(entry.name)
        try:
            key = load_public_key(path)
        except SigningKeyError as exc:
            raise TrustStoreError(f"trust store: key {entry.name!r}: {exc}") from exc
        if key.fingerprint != entry.fingerprint:
            raise TrustStoreError(
                f"trust store: {path} has fingerprint {key.fingerprint[:16]}... but the index "
                f"records {entry.fingerprint[:16]}... for {entry.name!r}; refusing to trust it"
            )
        return key

    def trusted_keys(self) -> list[PublicKey]:
        """Public keys of every key that is not revoked."""
        return [self.public_key(entry) for entry in self.entries() if not entry.revoked]

    def revoked(self) -> list[tuple[TrustedKey, PublicKey]]:
        """Revoked records with their public keys (to tell "revoked" from "unknown")."""
        return [(entry, self.public_key(entry)) for entry in self.entries() if entry.revoked]

    # ---- changing

    def add(self, name: str, role: KeyRole, key: PublicKey) -> TrustedKey:
        """Trust ``key`` as ``name`` in ``role``; :class:`KeyNameTaken` if either is known."""
        with self._changing() as index:
            for entry in index.keys:
                if entry.name == name:
                    raise KeyNameTaken(f"a key named {name!r} is already in the trust store")
                if entry.fingerprint == key.fingerprint:
                    raise KeyNameTaken(
                        f"this public key is already in the trust store as {entry.name!r}"
                    )
            return self._insert(index, name, role, key)

    def ensure(self, name: str, role: KeyRole, key: PublicKey) -> TrustedKey:
        """The record of ``key``, adding it as ``name`` (or ``name-<fingerprint>``) if new.

        Returns a revoked record as it is: refusing to use it is the caller's decision.
        """
        with self._changing() as index:
            for entry in index.keys:
                if entry.fingerprint == key.fingerprint:
                    return entry
            taken = {entry.name for entry in index.keys}
            # Two users' keys can claim the same name in one project; the fingerprint tells
            # them apart.
            chosen = name if name not in taken else f"{name}-{key.fingerprint[:12]}"
            return self._insert(index, chosen, role, key)

    def revoke(self, name: str, reason: str) -> TrustedKey:
        """Mark ``name`` revoked with ``reason``; it stays listed but verifies nothing."""
        if not reason.strip():
            raise TrustStoreError("a revocation needs a reason")
        with self._changing() as index:
            matches = [entry for entry in index.keys if entry.name == name]
            if not matches:
                raise UnknownKeyName(f"no key named {name!r} in the trust store {self.where}")
            if matches[0].revoked:
                raise KeyAlreadyRevoked(f"key {name!r} is already revoked")
            revoked = matches[0].model_copy(
                update={
                    "revoked": True,
                    "revoked_at": datetime.now(UTC),
                    "revoked_reason": " ".join(reason.split()),
                }
            )
            if self._stream is not None:
                self._stream.append(_Event(action="revoke", key=revoked))
            else:
                self._write(tuple(revoked if e.name == name else e for e in index.keys))
        return revoked

    # ---- internals

    def _insert(self, index: _Index, name: str, role: KeyRole, key: PublicKey) -> TrustedKey:
        try:
            entry = TrustedKey(
                name=name, role=role, fingerprint=key.fingerprint, added=datetime.now(UTC)
            )
        except ValidationError as exc:
            raise TrustStoreError(f"key name {name!r}: {exc.errors()[0]['msg']}") from exc
        if self._stream is not None:
            self._stream.append(_Event(action="add", key=entry, pem=key.to_pem().decode("ascii")))
            return entry
        # The PEM first: an index record never names a file that is not there.
        atomic_write_bytes(self._pem_path(name), key.to_pem())
        self._write((*index.keys, entry))
        return entry

    def _write(self, keys: tuple[TrustedKey, ...]) -> None:
        index = _Index(keys=tuple(sorted(keys, key=lambda entry: entry.name)))
        atomic_write_json(self.index_path, index.model_dump(mode="json"))

    @contextmanager
    def _changing(self) -> Iterator[_Index]:
        if self._stream is not None:
            with self._stream.changing() as index:
                yield index
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield self._read()

    def _read(self) -> _Index:
        if self._stream is not None:
            return self._stream.read()
        try:
            data = read_store_file(self.index_path)
        except OSError as exc:
            raise TrustStoreError(f"cannot read {self.index_path}: {exc.strerror}") from exc
        if data is None:
            return _Index()
        try:
            return _Index.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "index"
            raise TrustStoreError(
                f"{self.index_path} is not a trust store index: {where}: {error['msg']}"
            ) from exc

    def _pem_path(self, name: str) -> Path:
        return self.directory / f"{name}.pem"


class _Event(BaseModel):
    """One change of a trust store kept in a record stream: a key added, or revoked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-trust-event/v1"] = EVENT_FORMAT
    action: Literal["add", "revoke"]
    key: TrustedKey
    pem: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> _Event:
        if (self.action == "add") != (self.pem is not None):
            raise ValueError("an add carries the key's PEM, a revocation none")
        if (self.action == "revoke") != self.key.revoked:
            raise ValueError("an add records an unrevoked key, a revocation a revoked one")
        return self


class _EventStream:
    """A trust store's changes in a server record stream; its index is their replay.

    ``changing`` holds the stream's session (its lock) from reading the index to
    appending the change, as the file store holds its lock.
    """

    def __init__(self, stream: RecordStream) -> None:
        self._stream = stream
        self.label = stream.label
        self._session: StreamSession | None = None
        self._pems: dict[str, tuple[str, bytes]] = {}

    def read(self) -> _Index:
        with self._stream.session() as session:
            return self._replay(session)

    @contextmanager
    def changing(self) -> Iterator[_Index]:
        with self._stream.session() as session:
            self._session = session
            try:
                yield self._replay(session)
            finally:
                self._session = None

    def append(self, event: _Event) -> None:
        assert self._session is not None, "appended outside changing()"
        record = canonical_bytes(event.model_dump(mode="json"))
        self._session.append([lambda seq, prev: record])

    def public_key(self, entry: TrustedKey) -> PublicKey:
        if self._pems.get(entry.name, ("",))[0] != entry.fingerprint:
            self.read()  # a key added since the last read
        fingerprint, pem = self._pems.get(entry.name, ("", b""))
        if fingerprint != entry.fingerprint:
            raise TrustStoreError(
                f"trust store {self._stream.label}: no key {entry.name!r} with fingerprint "
                f"{entry.fingerprint[:16]}...; refusing to trust it"
            )
        return PublicKey.from_pem(pem)

    def _replay(self, session: StreamSession) -> _Index:
        keys: dict[str, TrustedKey] = {}
        pems: dict[str, tuple[str, bytes]] = {}
        for number, line in enumerate(session.snapshot().raw.split(b"\n")[:-1]):
            where = f"trust store {self._stream.label}: record {number}"
            try:
                event = _Event.model_validate_json(line)
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(part) for part in error["loc"]) or "record"
                raise TrustStoreError(f"{where}: {field}: {error['msg']}") from None
            _apply(event, keys, pems, where)
        self._pems = pems
        # _apply keeps names and fingerprints unique, as the index requires.
        return _Index(keys=tuple(sorted(keys.values(), key=lambda entry: entry.name)))


def _apply(
    event: _Event, keys: dict[str, TrustedKey], pems: dict[str, tuple[str, bytes]], where: str
) -> None:
    """Add ``event`` to the replayed index, refusing what the store's own methods never write."""
    key = event.key
    if event.action == "add":
        assert event.pem is not None
        if key.name in keys or any(k.fingerprint == key.fingerprint for k in keys.values()):
            raise TrustStoreError(
                f"{where} adds {key.name!r} ({key.fingerprint[:16]}...), whose name or key "
                f"the store already holds; refusing the store"
            )
        pem = event.pem.encode("ascii")
        try:
            found = PublicKey.from_pem(pem).fingerprint
        except SigningKeyError as exc:
            raise TrustStoreError(f"{where}: key {key.name!r}: {exc}") from None
        if found != key.fingerprint:
            raise TrustStoreError(
                f"{where}: the PEM of {key.name!r} has fingerprint {found[:16]}... but its record "
                f"says {key.fingerprint[:16]}...; refusing the store"
            )
        keys[key.name], pems[key.name] = key, (key.fingerprint, pem)
        return
    before = keys.get(key.name)
    unrevoked = key.model_copy(
        update={"revoked": False, "revoked_at": None, "revoked_reason": None}
    )
    if before is None or before.revoked or before != unrevoked:
        raise TrustStoreError(
            f"{where} revokes {key.name!r}, which is not an unrevoked key of that record; "
            f"refusing the store"
        )
    keys[key.name] = key


# Backend name (stores.select.BACKENDS) -> the event stream a store kept through
# ``store_dir`` is read from; None: the files in its directory, as without ``store_dir``.
_KEPT_IN: dict[str, Callable[[RecordStream], _EventStream | None]] = {
    LocalStream.backend: lambda stream: None,
    PostgresStream.backend: _EventStream,
}
