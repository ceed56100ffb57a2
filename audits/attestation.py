"""Attestations: a person's signed word for a NIST AI RMF subcategory the pipeline cannot show.

An attestation is signed like a sign-off (:mod:`audits.signoff`): an in-toto Statement v1
in a DSSE envelope, signed with a person's Ed25519 key from the project's trust store.

.. code-block:: json

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "nist-ai-rmf:MEASURE 2.11", "digest": {"sha256": "..."}},
                 {"name": "models/model.safetensors", "digest": {"sha256": "..."}}],
     "predicateType": "https://custodian.invalid/attestation/v1",
     "predicate": {"subcategory": "MEASURE 2.11", "attester": "olivia", "role": "...",
                   "key_fingerprint": "...", "actor": "olivia", "signed_at": "...",
                   "note": "what was checked", "catalog_version": "1.1.0", "git_commit": "..."}}

What it binds
    The subcategory as the catalog words it (SHA-256 of its canonical id and paraphrase), so
    a reworded subcategory needs a new attestation; and, where the catalog also cites
    pipeline evidence for the subcategory (the person attests what the metrics leave open,
    e.g. whether measured disparities are acceptable), the model it speaks of: a retrained
    model needs a new one. Organisational subcategories (training, incident processes) bind
    the subcategory alone and stay valid across runs.

:func:`review_attestations` trusts nothing in a file before its signature verifies against
a person's key in the trust store, checks the statement's claimed signer against that key,
and counts an attestation only while its subjects are the current ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from audits.canonical import canonical_sha256
from audits.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from audits.keys import SigningKey
from audits.nist import Attested, Catalog, Subcategory, SubcategoryId
from audits.signoff import (
    Digest,
    InTotoStatement,
    Reason,
    ReasonCode,
    SignoffError,
    Subject,
    Text,
    first_error,
    signer_mismatch,
    verify_envelope,
)
from audits.trust import Fingerprint, KeyName, KeyRole, KeySet, TrustedKey

PREDICATE_TYPE = "https://custodian.invalid/attestation/v1"
MODEL_SUBJECT = "models/model.safetensors"
SUBJECT_PREFIX = "nist-ai-rmf:"


class AttestationError(SignoffError):
    """An attestation cannot be made (unknown subcategory, nothing a person can add)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttestationPredicate(_Frozen):
    """Who attests which subcategory, when, and what they checked."""

    subcategory: SubcategoryId
    attester: KeyName
    role: KeyRole
    key_fingerprint: Fingerprint
    actor: Text
    signed_at: AwareDatetime
    # What was checked and where it is recorded; optional in the CLI contract, and the page
    # shows an attestation without one as such.
    note: Text | None = None
    catalog_version: str
    git_commit: str | None

    @field_serializer("signed_at")
    def _utc_text(self, value: datetime) -> str:
        return value.isoformat().replace("+00:00", "Z")


class AttestationStatement(InTotoStatement):
    """An in-toto Statement v1 whose predicate is a Custodian attestation."""

    predicate_type: Literal["https://custodian.invalid/attestation/v1"] = Field(
        PREDICATE_TYPE, alias="predicateType"
    )
    predicate: AttestationPredicate

    @model_validator(mode="after")
    def _names_its_subcategory(self) -> AttestationStatement:
        if SUBJECT_PREFIX + self.predicate.subcategory not in self.digests():
            raise ValueError("the subjects do not include the subcategory the predicate names")
        return self


def subcategory_digest(item: Subcategory) -> str:
    """SHA-256 of the subcategory as the catalog words it (canonical id and paraphrase)."""
    return canonical_sha256({"id": item.id, "summary": item.summary})


def required_subjects(item: Subcategory, model_sha256: str | None) -> dict[str, str | None]:
    """What an attestation of ``item`` must sign now: the subcategory, and the model where
    the catalog cites pipeline evidence for it (None: the model is missing)."""
    if not item.evidence.needs_person:
        raise AttestationError(
            f"{item.id}: the pipeline's evidence covers it fully; there is nothing to attest"
        )
    subjects: dict[str, str | None] = {SUBJECT_PREFIX + item.id: subcategory_digest(item)}
    if item.evidence.kinds:
        subjects[MODEL_SUBJECT] = model_sha256
    return subjects


def find_subcategory(catalog: Catalog, subcategory: str) -> Subcategory:
    found = next((item for item in catalog.subcategories if item.id == subcategory), None)
    if found is None:
        raise AttestationError(
            f"{subcategory!r} is not a subcategory of the catalog (e.g. 'GOVERN 2.2')"
        )
    return found


def sign_attestation(
    subjects: Mapping[str, str], predicate: AttestationPredicate, key: SigningKey
) -> Envelope:
    """The DSSE envelope of an attestation of ``subjects`` signed by ``key``."""
    if key.fingerprint != predicate.key_fingerprint:
        raise AttestationError("the attestation names another key than the one signing it")
    subject = tuple(
        Subject(name=name, digest=Digest(sha256=digest))
        for name, digest in sorted(subjects.items())
    )
    statement = AttestationStatement(subject=subject, predicate=predicate)
    return sign_envelope(IN_TOTO_PAYLOAD_TYPE, statement.payload(), key)


def envelope_json(envelope: Envelope) -> str:
    return json.dumps(envelope.to_json(), indent=2, sort_keys=True) + "\n"


class AttestationStatus(StrEnum):
    COUNTED = "counted"  # verified, and signs the current subcategory (and model)
    STALE = "stale"  # verified, but the model or the subcategory's wording changed since
    REJECTED = "rejected"  # bad signature, unknown, revoked or pipeline key, malformed


class AttestationCheck(_Frozen):
    file: str
    status: AttestationStatus
    subcategory: str | None = None
    attester: str | None = None
    role: KeyRole | None = None
    signed_at: str | None = None
    note: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class AttestationReview:
    """Every reason the required attestations are not all there, and what each file is."""

    reasons: tuple[Reason, ...]
    checks: tuple[AttestationCheck, ...]
    attested: Mapping[str, Attested]

    @property
    def passed(self) -> bool:
        return not self.reasons


def review_attestations(
    files: Mapping[str, bytes],
    current: Mapping[str, Mapping[str, str | None]],
    required: Sequence[str],
    store: KeySet,
) -> AttestationReview:
    """Which subcategories the attestations in ``files`` (name -> bytes) cover now.

    ``current``: each attestable subcategory -> the subjects an attestation must sign now.
    As for sign-offs, a file whose signature does not verify, by a key the store does not
    know or in a role it does not hold, is a reason whatever it claims: someone wrote a file
    they should not have. A key revoked since it attested only loses that attestation.
    """
    reasons: list[Reason] = []
    checks: list[AttestationCheck] = []
    attested: dict[str, Attested] = {}
    for name in sorted(files):
        outcome = _authenticate(name, files[name], store)
        if isinstance(outcome, Reason):
            reasons.append(outcome)
            checks.append(
                AttestationCheck(file=name, status=AttestationStatus.REJECTED, reason=str(outcome))
            )
            continue
        statement, key = outcome
        predicate = statement.predicate
        role = key.role
        wanted = current.get(predicate.subcategory)
        signed_at = predicate.model_dump(mode="json")["signed_at"]
        common = {
            "file": name,
            "subcategory": predicate.subcategory,
            "attester": predicate.attester,
            "role": role,
            "signed_at": signed_at,
            "note": predicate.note,
        }
        if key.revoked:
            why = f"key {key.name!r} revoked: {key.revoked_reason}"
            checks.append(AttestationCheck(status=AttestationStatus.REJECTED, reason=why, **common))
            continue
        if wanted is None or dict(wanted) != statement.digests():
            why = (
                "the catalog no longer asks a person to attest it"
                if wanted is None
                else "signed another model or wording of the subcategory than the current one"
            )
            checks.append(AttestationCheck(status=AttestationStatus.STALE, reason=why, **common))
            continue
        checks.append(AttestationCheck(status=AttestationStatus.COUNTED, **common))
        latest = attested.get(predicate.subcategory)
        if latest is None or latest.signed_at < signed_at:
            attested[predicate.subcategory] = Attested(
                subcategory=predicate.subcategory,
                file=name,
                attester=predicate.attester,
                role=role.value,
                signed_at=signed_at,
            )
    for subcategory in required:
        if subcategory not in attested:
            earlier = [c for c in checks if c.subcategory == subcategory]
            reasons.append(
                Reason(
                    code=ReasonCode.MISSING_ATTESTATION,
                    message=f"{subcategory}: no current attestation"
                    + (
                        f" (latest {earlier[-1].status.value}: {earlier[-1].reason})"
                        if earlier
                        else ""
                    )
                    + f" (custodian attest '{subcategory}' --as NAME --note TEXT)",
                )
            )
    return AttestationReview(tuple(reasons), tuple(checks), attested)


def _authenticate(
    name: str, data: bytes, store: KeySet
) -> tuple[AttestationStatement, TrustedKey] | Reason:
    verified = verify_envelope(name, data, store, what="attestation")
    if isinstance(verified, Reason):
        return verified
    envelope, key = verified
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        return Reason(
            code=ReasonCode.MALFORMED_SIGNOFF,
            message=f"{name}: payloadType is {envelope.payload_type!r}",
        )
    try:
        statement = AttestationStatement.model_validate_json(envelope.payload_bytes())
    except ValidationError as exc:
        return Reason(
            code=ReasonCode.MALFORMED_SIGNOFF,
            message=f"{name}: not an attestation statement: {first_error(exc)}",
        )
    claimed = statement.predicate
    mismatch = signer_mismatch(
        name, (claimed.role, claimed.attester, claimed.key_fingerprint), key, "attest"
    )
    if mismatch is not None:
        return mismatch
    return statement, key
