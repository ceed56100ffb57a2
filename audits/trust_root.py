"""The root of trust for people's keys: signed, versioned metadata in the style of TUF's root role.

Without it, the committed trust store (:mod:`audits.trust`) is whatever files
sit in ``trust/``: a key added by hand, or ``revoked`` set back to false, is
believed. The root makes the key set itself signed data:

``trust/root/<N>.json`` (every version, committed) and ``trust/root.json`` (the newest)
    A DSSE envelope (payload type :data:`ROOT_PAYLOAD_TYPE`) over the RFC 8785
    canonical JSON of :class:`Root`: ``version``, ``expires``, ``threshold``,
    the trust ``administrators`` (name and public key), the people's ``keys``
    (name, role, public key) and the ``revoked`` keys (with when and why). One
    signature per administrator who approved it.

:func:`verify_chain` accepts version 1 when ``threshold`` of its own
administrators signed it, and each later version N+1 only when ``threshold``
of version N's administrators *and* of its own signed it (so a stolen admin
key, or the new admins alone, cannot take over), the versions are consecutive,
every key revoked in N is still revoked in N+1 and listed nowhere else, and the
newest has not expired. It trusts the newest version that verified, as TUF
does, and reports every problem: the release gate refuses on any
(``untrusted_key_set``).

:class:`RootKeySet` is what sign-offs and attestations are checked against.
Adding trust takes ``threshold`` administrators; taking it away takes anyone:
a key revoked in the local index (``custodian keys revoke``) is revoked here
too, and no index entry adds a key.

What it does not do: version 1 is trusted on first use. Someone who can
rewrite the whole chain, version 1 included, with administrator keys of their
own is caught only by the project's history (``trust/root/1.json`` as
committed) or by whoever pinned it; see SECURITY.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_serializer,
    model_validator,
)

from audits.canonical import canonical_bytes
from audits.dsse import Envelope, EnvelopeError, Signature, pae, verify_signature
from audits.errors import AuditError
from audits.files import atomic_write_text
from audits.keys import PublicKey, SigningKey, SigningKeyError
from audits.trust import Fingerprint, KeyName, KeyRole, TrustedKey, UnknownKeyName
from stores.files import read_store_file

ROOT_FORMAT = "custodian-root/v1"
ROOT_PAYLOAD_TYPE = "application/vnd.custodian.root+json"
ROOT_FILE = "root.json"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
VERSIONS_DIR = "root"


class TrustRootError(AuditError):
    """The root of trust cannot be read, verified or changed as asked."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RootKey(_Frozen):
    """A public key the root names: whose, in which role, since when."""

    name: KeyName
    role: KeyRole
    public_key: str = Field(description="SubjectPublicKeyInfo PEM")
    added: AwareDatetime

    @property
    def key(self) -> PublicKey:
        return PublicKey.from_pem(self.public_key.encode("ascii"))

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    @field_serializer("added")
    def _utc(self, value: datetime) -> str:
        return _utc_text(value)


class RevokedKey(RootKey):
    """A key that verifies nothing any more; once listed, listed in every later version."""

    revoked_at: AwareDatetime
    reason: str = Field(min_length=1)

    @field_serializer("revoked_at")
    def _utc_revoked(self, value: datetime) -> str:
        return _utc_text(value)


class Root(_Frozen):
    """One version of the root: who administers trust, whose keys count, which are revoked."""

    format: Literal["custodian-root/v1"] = ROOT_FORMAT
    version: PositiveInt
    expires: AwareDatetime
    threshold: PositiveInt
    administrators: dict[Fingerprint, RootKey]
    keys: dict[Fingerprint, RootKey]
    revoked: dict[Fingerprint, RevokedKey] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Root:
        for group in (self.administrators, self.keys, self.revoked):
            for fingerprint, entry in group.items():
                try:
                    actual = entry.fingerprint
                except SigningKeyError as exc:
                    raise ValueError(f"{entry.name}: {exc}") from None
                if actual != fingerprint:
                    raise ValueError(f"{entry.name}: the fingerprint does not match its key")
        if self.threshold > len(self.administrators):
            raise ValueError(
                f"threshold {self.threshold} exceeds the {len(self.administrators)} administrators"
            )
        if any(entry.role is not KeyRole.TRUST_ADMIN for entry in self.administrators.values()):
            raise ValueError("administrators hold trust-admin keys")
        if any(not entry.role.signs_off for entry in self.keys.values()):
            raise ValueError("keys are people's signing keys (not pipeline or trust-admin)")
        live = self.administrators.keys() | self.keys.keys()
        if live & self.revoked.keys():
            raise ValueError("a revoked key is listed as trusted")
        names = [entry.name for entry in self.keys.values()]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        return self

    @field_serializer("expires")
    def _utc(self, value: datetime) -> str:
        return _utc_text(value)

    def payload(self) -> bytes:
        return canonical_bytes(self.model_dump(mode="json"))


@dataclass
class SignedRoot:
    """A root version and the administrators' signatures over it."""

    root: Root
    signatures: list[Signature] = field(default_factory=list)

    def envelope(self) -> Envelope:
        payload = base64.b64encode(self.root.payload()).decode("ascii")
        return Envelope(payloadType=ROOT_PAYLOAD_TYPE, payload=payload, signatures=self.signatures)

    def text(self) -> str:
        return json.dumps(self.envelope().to_json(), indent=2, sort_keys=True) + "\n"

    def sign(self, key: SigningKey) -> None:
        """Add ``key``'s signature (replacing an earlier one by the same key)."""
        signature = key.sign(pae(ROOT_PAYLOAD_TYPE, self.root.payload()))
        self.signatures = [s for s in self.signatures if s.keyid != key.fingerprint]
        self.signatures.append(
            Signature(keyid=key.fingerprint, sig=base64.b64encode(signature).decode("ascii"))
        )

    def signed_by(self, administrators: Mapping[str, RootKey]) -> set[str]:
        """Fingerprints of ``administrators`` whose signature over this version verifies."""
        envelope = self.envelope()
        found = set()
        for fingerprint, admin in administrators.items():
            key = admin.key
            if any(verify_signature(envelope, s, key) for s in self.signatures):
                found.add(fingerprint)
        return found

    @classmethod
    def parse(cls, data: bytes, where: str) -> SignedRoot:
        try:
            envelope = Envelope.parse(data, where)
        except EnvelopeError as exc:
            raise TrustRootError(str(exc)) from None
        if envelope.payload_type != ROOT_PAYLOAD_TYPE:
            raise TrustRootError(f"{where}: payloadType is {envelope.payload_type!r}")
        try:
            root = Root.model_validate_json(envelope.payload_bytes())
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(part) for part in error["loc"]) or "root"
            raise TrustRootError(f"{where}: not a trust root: {loc}: {error['msg']}") from None
        return cls(root=root, signatures=list(envelope.signatures))


@dataclass(frozen=True)
class ChainReview:
    """The newest root version that verified (None: none did) and every problem found."""

    trusted: Root | None
    problems: tuple[str, ...]
    latest: SignedRoot | None = None  # the newest version on disk, verified or not

    @property
    def ok(self) -> bool:
        return self.trusted is not None and not self.problems


def verify_chain(versions: Sequence[SignedRoot], now: datetime) -> ChainReview:
    """Check a chain of root versions, oldest first (see the module's rules)."""
    if not versions:
        return ChainReview(trusted=None, problems=("no trust root (custodian trust init)",))
    problems: list[str] = []
    trusted: Root | None = None
    for number, signed in enumerate(versions, start=1):
        root = signed.root
        if root.version != number:
            problems.append(f"root version {number} says it is version {root.version}")
            break
        own = signed.signed_by(root.administrators)
        if len(own) < root.threshold:
            problems.append(
                f"root version {number}: {len(own)} of its own administrators signed it, "
                f"its threshold is {root.threshold}"
            )
            break
        if trusted is not None:
            previous = signed.signed_by(trusted.administrators)
            if len(previous) < trusted.threshold:
                problems.append(
                    f"root version {number}: {len(previous)} of version {trusted.version}'s "
                    f"administrators signed it, their threshold is {trusted.threshold}; "
                    f"the key set is not approved"
                )
                break
            dropped = trusted.revoked.keys() - root.revoked.keys()
            if dropped:
                names = ", ".join(sorted(trusted.revoked[f].name for f in dropped))
                problems.append(
                    f"root version {number} un-revokes {names}; revocation is permanent"
                )
                break
        trusted = root
    if trusted is not None and not problems and trusted.expires <= now:
        problems.append(
            f"root version {trusted.version} expired {_utc_text(trusted.expires)}; "
            f"the administrators must sign a new version"
        )
    return ChainReview(trusted=trusted, problems=tuple(problems), latest=versions[-1])


class TrustRoot:
    """The root files in a project's ``trust/`` directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.current_path = self.directory / ROOT_FILE
        self.versions_dir = self.directory / VERSIONS_DIR

    def exists(self) -> bool:
        return read_store_file(self.current_path) is not None

    def versions(self) -> list[SignedRoot]:
        """Every version file, oldest first; refuses gaps and a ``root.json`` that is not the
        newest version."""
        found: list[SignedRoot] = []
        number = 1
        while (data := read_store_file(self._version_path(number))) is not None:
            found.append(SignedRoot.parse(data, str(self._version_path(number))))
            number += 1
        current = read_store_file(self.current_path)
        if current is None and not found:
            return []
        newest = read_store_file(self._version_path(len(found))) if found else None
        if current is None or current != newest:
            raise TrustRootError(
                f"{self.current_path} is not the newest version in {self.versions_dir}/; "
                f"the root files were edited by hand"
            )
        return found

    def review(self, now: datetime | None = None) -> ChainReview:
        try:
            versions = self.versions()
        except (TrustRootError, OSError) as exc:
            return ChainReview(trusted=None, problems=(str(exc),))
        return verify_chain(versions, now or datetime.now(UTC))

    def write(self, signed: SignedRoot) -> None:
        """Write ``signed`` as its version's file and as ``root.json``."""
        text = signed.text()
        atomic_write_text(self._version_path(signed.root.version), text)
        atomic_write_text(self.current_path, text)

    def draft(self) -> SignedRoot:
        """The version a change goes into: the newest while it still lacks signatures (its
        signatures dropped: they covered other content), else a new version on top of it."""
        versions = self.versions()
        if not versions:
            raise TrustRootError(f"no {self.current_path} yet (custodian trust init)")
        # Approval, not expiry, decides: an expired version is replaced by a new one.
        if verify_chain(versions, _EPOCH).ok:
            newest = versions[-1].root
            return SignedRoot(root=newest.model_copy(update={"version": newest.version + 1}))
        before = verify_chain(versions[:-1], _EPOCH) if len(versions) > 1 else None
        if before is not None and not before.ok:
            raise TrustRootError(
                f"the trust root does not verify before version {len(versions)}: "
                f"{before.problems[0]}; nothing can be added to it"
            )
        return SignedRoot(root=versions[-1].root)

    def _version_path(self, number: int) -> Path:
        return self.versions_dir / f"{number}.json"


class RootKeySet:
    """The people's keys a verified root trusts, as sign-offs and attestations look them up.

    ``revoked_locally``: fingerprints the local index revoked (revoking needs no quorum).
    """

    def __init__(
        self, root: Root | None, revoked_locally: Mapping[str, TrustedKey] | None = None
    ) -> None:
        self.root = root
        revoked_locally = revoked_locally or {}
        self._entries: dict[str, tuple[TrustedKey, PublicKey]] = {}
        if root is None:
            return
        for fingerprint, entry in root.keys.items():
            local = revoked_locally.get(fingerprint)
            record = TrustedKey(
                name=entry.name, role=entry.role, fingerprint=fingerprint, added=entry.added
            )
            if local is not None:
                record = record.model_copy(
                    update={
                        "revoked": True,
                        "revoked_at": local.revoked_at,
                        "revoked_reason": local.revoked_reason,
                    }
                )
            self._entries[fingerprint] = (record, entry.key)
        for fingerprint, gone in root.revoked.items():
            record = TrustedKey(
                name=gone.name,
                role=gone.role,
                fingerprint=fingerprint,
                added=gone.added,
                revoked=True,
                revoked_at=gone.revoked_at,
                revoked_reason=gone.reason,
            )
            self._entries[fingerprint] = (record, gone.key)

    def entries(self) -> tuple[TrustedKey, ...]:
        return tuple(sorted((e for e, _ in self._entries.values()), key=lambda e: e.name))

    def get(self, name: str) -> TrustedKey:
        for entry in self.entries():
            if entry.name == name and not entry.revoked:
                return entry
        for entry in self.entries():
            if entry.name == name:
                return entry
        raise UnknownKeyName(f"no key named {name!r} in the trust root")

    def by_fingerprint(self, fingerprint: str) -> TrustedKey | None:
        found = self._entries.get(fingerprint)
        return found[0] if found else None

    def public_key(self, entry: TrustedKey) -> PublicKey:
        return self._entries[entry.fingerprint][1]


def with_key(root: Root, key: RootKey, expires: datetime) -> Root:
    """``root`` trusting ``key`` too; never a key it revoked."""
    fingerprint = key.fingerprint
    if fingerprint in root.revoked:
        raise TrustRootError(f"key {key.name!r} was revoked; revocation is permanent")
    if fingerprint in root.keys:
        raise TrustRootError(f"key {key.name!r} is already in the trust root")
    if any(entry.name == key.name for entry in root.keys.values()):
        raise TrustRootError(f"another key is already named {key.name!r} in the trust root")
    return _validated(root, keys={**root.keys, fingerprint: key}, expires=expires)


def without_key(root: Root, name: str, reason: str, now: datetime, expires: datetime) -> Root:
    """``root`` with the key called ``name`` moved to the revoked keys, for good."""
    if not reason.strip():
        raise TrustRootError("a revocation needs a reason")
    found = [(f, k) for f, k in {**root.keys, **root.administrators}.items() if k.name == name]
    if not found:
        raise UnknownKeyName(f"no trusted key named {name!r} in the trust root")
    fingerprint, key = found[0]
    return _validated(
        root,
        keys={f: k for f, k in root.keys.items() if f != fingerprint},
        administrators={f: k for f, k in root.administrators.items() if f != fingerprint},
        revoked={**root.revoked, fingerprint: revoked_key(key, reason, now)},
        expires=expires,
    )


def _validated(root: Root, **changes: object) -> Root:
    try:
        fields = {name: getattr(root, name) for name in Root.model_fields}
        return Root.model_validate({**fields, **changes})
    except ValidationError as exc:
        raise TrustRootError(f"the new root would be invalid: {exc.errors()[0]['msg']}") from None


def root_key(entry: TrustedKey, key: PublicKey) -> RootKey:
    """The root's record of a key from the trust store."""
    return RootKey(
        name=entry.name, role=entry.role, public_key=key.to_pem().decode("ascii"), added=entry.added
    )


def revoked_key(key: RootKey, reason: str, when: datetime) -> RevokedKey:
    return RevokedKey(**key.model_dump(), revoked_at=when, reason=" ".join(reason.split()))


def by_fingerprint(keys: Iterable[RootKey]) -> dict[str, RootKey]:
    return {key.fingerprint: key for key in keys}


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
