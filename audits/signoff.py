"""Sign-offs: a reviewer's signature over exactly the artifacts they reviewed, and the release gate.

A sign-off is an in-toto Statement v1 in a DSSE envelope (:mod:`audits.dsse`)
signed with the reviewer's Ed25519 key:

.. code-block:: json

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "models/model.safetensors", "digest": {"sha256": "..."}}, ...],
     "predicateType": "https://custodian.invalid/signoff/v1",
     "predicate": {"reviewer": "alice", "role": "privacy-officer", "key_fingerprint": "...",
                   "actor": "alice", "signed_at": "...", "note": "...", "git_commit": "...",
                   "policy": {"required_roles": [...], "sha256": "..."},
                   "compliance_passed": true, "gates": [...], "evidence": {"path": "sha256"},
                   "log_checkpoint": {"tree_head": {...}, "signature": "..."}}}

The statement is serialised as RFC 8785 canonical JSON, so the payload's bytes
are a function of its content. Any tool that speaks DSSE can check the
signature with the reviewer's public key from the project's trust store.

:func:`review_signoffs` is the release gate's core: given every sign-off file,
the artifacts' current digests, the roles policy requires and the trust store,
it returns every reason the release is blocked (not just the first) and what it
concluded about each file. It trusts nothing in an envelope before its
signature verifies against a key the store trusts, and the store, not the
statement, says which role a key holds. A signature that does not verify, a key
the store does not know, a malformed file, or a statement that claims another
role than its key's are reported whatever the statement signs, since each means
someone wrote a file they should not have. A revoked key matters only where its
sign-off would otherwise count: revoking a key after it signed an old release
must not block every later one.

"Different people" means different keys (one role per key, by construction of
the store) *and* different actors, the login or ``$CUSTODIAN_ACTOR`` that ran
``custodian signoff``, recorded in the signed predicate: one person holding two
role keys and signing with both is refused. A person who deliberately signs
under another actor name defeats this; the trust store's review is where the
project decides who holds which key.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    model_validator,
)

from audits.canonical import canonical_bytes
from audits.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    EnvelopeError,
    sign_envelope,
    verify_signature,
)
from audits.errors import AuditError
from audits.keys import SigningKey
from audits.log.records import SignedCheckpoint
from audits.trust import Fingerprint, KeyName, KeyRole, KeySet, TrustedKey

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://custodian.invalid/signoff/v1"
COMPLIANCE_FORMAT = "custodian-compliance/v1"

NOTE_LIMIT = 2000

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=NOTE_LIMIT)]


class SignoffError(AuditError):
    """A sign-off cannot be made or read."""


class SignoffRefused(SignoffError):
    """Nothing may be signed now: a gate fails, or the evidence is missing or stale (exit 1)."""


class SignoffFormatError(SignoffError):
    """A file is not a Custodian sign-off (envelope, statement or predicate)."""


# --------------------------------------------------------------------------- the compliance report


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComplianceGate(BaseModel):
    """What a sign-off reads of one gate of ``reports/compliance.json``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Text
    passed: bool
    waived: bool = False
    evidence: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return self.passed or self.waived


class ComplianceSummary(BaseModel):
    """What a sign-off reads of ``reports/compliance.json`` (the report stage writes more)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    format: Literal["custodian-compliance/v1"]
    passed: bool
    gates: tuple[ComplianceGate, ...] = Field(min_length=1)

    @classmethod
    def parse(cls, data: bytes, where: str) -> ComplianceSummary:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise SignoffRefused(f"{where}: {first_error(exc)}; rerun the report stage") from None

    def refusal(self, where: str) -> str | None:
        """Why nothing may be signed on this report, or None."""
        failing = [gate.id for gate in self.gates if not gate.holds]
        if failing:
            return f"{where}: gate(s) failing: {', '.join(failing)}; sign-off refused"
        if not self.passed:
            return f"{where}: passed is false although every gate passed or was waived"
        return None


# --------------------------------------------------------------------------- the statement


class Digest(_Frozen):
    sha256: Sha256Hex


class Subject(_Frozen):
    """An artifact the statement is about: a path relative to the project root and its digest."""

    name: Annotated[str, StringConstraints(min_length=1)]
    digest: Digest


class GateRecord(_Frozen):
    id: Text
    passed: bool
    waived: bool


class PolicyRecord(_Frozen):
    """The policy the reviewer signed under: the roles it requires and its canonical hash."""

    required_roles: tuple[KeyRole, ...]
    sha256: Sha256Hex


class SignoffPredicate(_Frozen):
    """Who signed, in which role, when, why, and on the strength of which evidence."""

    reviewer: KeyName
    role: KeyRole
    key_fingerprint: Fingerprint
    actor: Text
    signed_at: AwareDatetime
    note: Text | None = None
    git_commit: str | None
    policy: PolicyRecord
    compliance_passed: Literal[True]
    gates: tuple[GateRecord, ...]
    evidence: dict[str, Sha256Hex]
    # The audit log's signed head when this was signed: committed with the sign-off, it is
    # a witness the release gate holds the log to (audits.witness).
    log_checkpoint: SignedCheckpoint

    @field_serializer("signed_at")
    def _utc_text(self, value: datetime) -> str:
        return value.isoformat().replace("+00:00", "Z")


class InTotoStatement(_Frozen):
    """An in-toto Statement v1: subjects, each listed once; subclasses add the predicate."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type_: Literal["https://in-toto.io/Statement/v1"] = Field(STATEMENT_TYPE, alias="_type")
    subject: tuple[Subject, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _subjects_unique(self) -> InTotoStatement:
        names = [subject.name for subject in self.subject]
        if len(set(names)) != len(names):
            raise ValueError("each subject is listed once")
        return self

    def digests(self) -> dict[str, str]:
        """Subject name -> SHA-256."""
        return {subject.name: subject.digest.sha256 for subject in self.subject}

    def payload(self) -> bytes:
        return canonical_bytes(self.model_dump(mode="json", by_alias=True))


class Statement(InTotoStatement):
    """An in-toto Statement v1 whose predicate is a Custodian sign-off."""

    predicate_type: Literal["https://custodian.invalid/signoff/v1"] = Field(
        PREDICATE_TYPE, alias="predicateType"
    )
    predicate: SignoffPredicate


def build_statement(artifacts: Mapping[str, str], predicate: SignoffPredicate) -> Statement:
    """A statement over ``artifacts`` (path -> SHA-256), sorted by path."""
    subjects = tuple(
        Subject(name=name, digest=Digest(sha256=digest))
        for name, digest in sorted(artifacts.items())
    )
    return Statement(subject=subjects, predicate=predicate)


def sign_statement(statement: Statement, key: SigningKey) -> Envelope:
    """The DSSE envelope of ``statement`` signed by ``key``."""
    if key.fingerprint != statement.predicate.key_fingerprint:
        raise SignoffError("the statement names another key than the one signing it")
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.payload(), key)


def envelope_json(envelope: Envelope) -> str:
    """The envelope as a sign-off file holds it: pretty JSON, keys sorted."""
    return json.dumps(envelope.to_json(), indent=2, sort_keys=True) + "\n"


def read_statement(envelope: Envelope, where: str) -> Statement:
    """The sign-off statement inside ``envelope`` (call it only once a signature verified)."""
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise SignoffFormatError(f"{where}: payloadType is {envelope.payload_type!r}")
    try:
        return Statement.model_validate_json(envelope.payload_bytes())
    except ValidationError as exc:
        message = f"{where}: not a sign-off statement: {first_error(exc)}"
        raise SignoffFormatError(message) from None


# --------------------------------------------------------------------------- the release gate


class ReasonCode(StrEnum):
    """Why a release is blocked."""

    MISSING_ROLE = "missing_role"
    SAME_PERSON = "same_person"
    CHANGED_ARTIFACT = "changed_artifact"
    MISSING_ARTIFACT = "missing_artifact"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    WRONG_ROLE = "wrong_role"
    MALFORMED_SIGNOFF = "malformed_signoff"
    LOG_TAMPERED = "log_tampered"
    LOG_NOT_EXTENDING_CHECKPOINT = "log_not_extending_checkpoint"
    MISSING_ATTESTATION = "missing_attestation"
    UNBOUND_REPORT = "unbound_report"
    UNTRUSTED_KEY_SET = "untrusted_key_set"


class Reason(_Frozen):
    code: ReasonCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class SignoffStatus(StrEnum):
    """What the gate concluded about one sign-off file."""

    COUNTED = "counted"  # valid, covers the current artifacts, its role is required
    CURRENT = "current"  # valid and current, but its role is not required or another counted
    SUPERSEDED = "superseded"  # valid, but for artifacts that have changed since
    REJECTED = "rejected"  # bad signature, unknown or revoked key, wrong role, malformed


class SignoffCheck(_Frozen):
    """One sign-off file as the gate saw it."""

    file: str
    status: SignoffStatus
    reviewer: str | None = None
    role: KeyRole | None = None
    actor: str | None = None
    signed_at: str | None = None
    key_fingerprint: str | None = None
    changed: tuple[str, ...] = ()  # artifacts that differ from what it signed


@dataclass(frozen=True)
class SignoffReview:
    """Every reason the sign-offs do not allow a release, and each file's status."""

    reasons: tuple[Reason, ...]
    signoffs: tuple[SignoffCheck, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class SignoffCandidate:
    file: str
    statement: Statement
    key: TrustedKey
    changed: list[str] = field(default_factory=list)

    @property
    def current(self) -> bool:
        return not self.changed


def review_signoffs(
    files: Mapping[str, bytes],
    artifacts: Mapping[str, str | None],
    required_roles: Sequence[KeyRole],
    store: KeySet,
) -> SignoffReview:
    """Whether the sign-offs in ``files`` (name -> bytes) cover ``artifacts`` for every role.

    ``artifacts`` maps each signed path to its current SHA-256, or None when it is missing.
    """
    if not required_roles:
        raise ValueError("a release needs at least one required role")
    reasons: list[Reason] = [
        Reason(code=ReasonCode.MISSING_ARTIFACT, message=f"{name}: not found")
        for name, digest in sorted(artifacts.items())
        if digest is None
    ]
    checks: dict[str, SignoffCheck] = {}
    candidates: list[SignoffCandidate] = []
    for name in sorted(files):
        outcome = authenticate_signoff(name, files[name], store)
        if isinstance(outcome, Reason):
            reasons.append(outcome)
            checks[name] = SignoffCheck(file=name, status=SignoffStatus.REJECTED)
            continue
        outcome.changed = _changed(outcome.statement.digests(), artifacts)
        candidates.append(outcome)
        status = SignoffStatus.CURRENT if outcome.current else SignoffStatus.SUPERSEDED
        checks[name] = _check(outcome, status)

    counted: dict[KeyRole, list[SignoffCandidate]] = {}
    for role in required_roles:
        trusted = [c for c in candidates if c.key.role is role and not c.key.revoked]
        revoked = [c for c in candidates if c.key.role is role and c.key.revoked and c.current]
        for candidate in revoked:
            reasons.append(_revoked(candidate))
            checks[candidate.file] = _check(candidate, SignoffStatus.REJECTED)
        usable = [c for c in trusted if c.current]
        if usable:
            counted[role] = usable
        elif revoked:
            continue  # the revoked key's reason says it all
        elif trusted:
            reasons.append(_stale(role, max(trusted, key=_signed_at)))
        else:
            reasons.append(
                Reason(
                    code=ReasonCode.MISSING_ROLE,
                    message=f"no valid sign-off by a {role.value} (custodian signoff --as NAME)",
                )
            )

    chosen = _distinct_people(counted) if len(counted) == len(required_roles) else None
    if chosen is None and len(counted) == len(required_roles) and len(counted) > 1:
        reasons.append(_same_person(counted))
    for candidate in chosen or []:
        checks[candidate.file] = _check(candidate, SignoffStatus.COUNTED)
    return SignoffReview(reasons=tuple(reasons), signoffs=tuple(checks.values()))


def verify_envelope(
    name: str, data: bytes, store: KeySet, what: str = "sign-off"
) -> tuple[Envelope, TrustedKey] | Reason:
    """The envelope in ``data`` and the trusted key its one signature verifies with, or why not.

    Shared by sign-offs and attestations: nothing in the payload is read before this holds.
    """
    try:
        envelope = Envelope.parse(data, name)
    except EnvelopeError as exc:
        return Reason(code=ReasonCode.MALFORMED_SIGNOFF, message=str(exc))
    if len(envelope.signatures) != 1:
        return Reason(
            code=ReasonCode.MALFORMED_SIGNOFF,
            message=f"{name}: {len(envelope.signatures)} signatures; a {what} carries one",
        )
    signature = envelope.signatures[0]
    hinted = store.by_fingerprint(signature.keyid)
    # keyid is an unauthenticated hint: it picks the key to try first, never decides trust.
    others = [entry for entry in store.entries() if entry is not hinted]
    key = next(
        (
            entry
            for entry in ([hinted] if hinted else []) + others
            if verify_signature(envelope, signature, store.public_key(entry))
        ),
        None,
    )
    if key is None and hinted is not None:
        return Reason(
            code=ReasonCode.BAD_SIGNATURE,
            message=f"{name}: the signature does not verify with key {hinted.name!r} "
            f"({hinted.fingerprint[:16]}...); the file was altered after signing",
        )
    if key is None:
        return Reason(
            code=ReasonCode.UNKNOWN_KEY,
            message=f"{name}: signed by key {signature.keyid[:16] or '(no keyid)'}..., "
            f"which is not in the trust store",
        )
    return envelope, key


def authenticate_signoff(name: str, data: bytes, store: KeySet) -> SignoffCandidate | Reason:
    """The verified statement and its key's record, or the reason the file is rejected."""
    verified = verify_envelope(name, data, store)
    if isinstance(verified, Reason):
        return verified
    envelope, key = verified
    try:
        statement = read_statement(envelope, name)
    except SignoffFormatError as exc:
        return Reason(code=ReasonCode.MALFORMED_SIGNOFF, message=str(exc))
    claimed = statement.predicate
    mismatch = signer_mismatch(
        name, (claimed.role, claimed.reviewer, claimed.key_fingerprint), key, "sign off"
    )
    if mismatch is not None:
        return mismatch
    return SignoffCandidate(file=name, statement=statement, key=key)


def signer_mismatch(
    name: str, claimed: tuple[KeyRole, str, str], key: TrustedKey, verb: str
) -> Reason | None:
    """Why the key that signed ``name`` cannot stand behind its ``claimed`` (role, person,
    key fingerprint), or None: the claim must be the key's own, and the key a reviewer's
    (``verb`` is what reviewers do with it: "sign off", "attest")."""
    role, person, _fingerprint = claimed
    if claimed != (key.role, key.name, key.fingerprint):
        return Reason(
            code=ReasonCode.WRONG_ROLE,
            message=f"{name}: claims {person!r} as {role.value}, but it is signed by key "
            f"{key.name!r}, whose role in the trust store is {key.role.value}",
        )
    if not key.role.signs_off:
        return Reason(
            code=ReasonCode.WRONG_ROLE,
            message=f"{name}: signed by the {key.role.value} key {key.name!r}; only reviewers "
            f"{verb}",
        )
    return None


def _changed(signed: Mapping[str, str], current: Mapping[str, str | None]) -> list[str]:
    lines = []
    for name in sorted(signed.keys() | current.keys()):
        before, now = signed.get(name), current.get(name)
        if before == now:
            continue
        if before is None:
            lines.append(f"{name} (not signed)")
        elif now is None:
            lines.append(f"{name} (signed {before[:12]}, now missing)")
        else:
            lines.append(f"{name} (signed {before[:12]}, now {now[:12]})")
    return lines


def _distinct_people(
    counted: Mapping[KeyRole, list[SignoffCandidate]],
) -> list[SignoffCandidate] | None:
    """One sign-off per role, no actor or key twice, if such a choice exists."""
    for choice in itertools.product(*counted.values()):
        actors = {c.statement.predicate.actor for c in choice}
        keys = {c.key.fingerprint for c in choice}
        if len(actors) == len(choice) == len(keys):
            return list(choice)
    return None


def _same_person(counted: Mapping[KeyRole, list[SignoffCandidate]]) -> Reason:
    by_actor: dict[str, list[str]] = {}
    for role, found in counted.items():
        for actor in sorted({c.statement.predicate.actor for c in found}):
            by_actor.setdefault(actor, []).append(role.value)
    shared = {actor: roles for actor, roles in by_actor.items() if len(roles) > 1}
    named = "; ".join(
        f"{actor!r} signed as {' and '.join(roles)}" for actor, roles in shared.items()
    )
    return Reason(
        code=ReasonCode.SAME_PERSON,
        message=f"the required roles must be signed off by different people: {named}",
    )


def _stale(role: KeyRole, latest: SignoffCandidate) -> Reason:
    return Reason(
        code=ReasonCode.CHANGED_ARTIFACT,
        message=f"{role.value}: the latest sign-off ({latest.file}, by {latest.key.name!r}) "
        f"covers artifacts that changed since: {', '.join(latest.changed)}",
    )


def _revoked(candidate: SignoffCandidate) -> Reason:
    key = candidate.key
    when = f"{key.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if key.revoked_at else "at some point"
    return Reason(
        code=ReasonCode.REVOKED_KEY,
        message=f"{candidate.file}: signed by key {key.name!r} ({key.role.value}), revoked "
        f"{when}: {key.revoked_reason}",
    )


def _check(candidate: SignoffCandidate, status: SignoffStatus) -> SignoffCheck:
    predicate = candidate.statement.predicate
    return SignoffCheck(
        file=candidate.file,
        status=status,
        reviewer=candidate.key.name,
        role=candidate.key.role,
        actor=predicate.actor,
        signed_at=predicate.model_dump(mode="json")["signed_at"],
        key_fingerprint=candidate.key.fingerprint,
        changed=tuple(candidate.changed),
    )


def _signed_at(candidate: SignoffCandidate) -> datetime:
    return candidate.statement.predicate.signed_at


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"
