"""DSSE envelopes (Dead Simple Signing Envelope, secure-systems-lab/dsse, protocol v1.0.0).

A signature covers the *pre-authentication encoding* of the payload and its type,

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

(``LEN`` the ASCII decimal byte length), so neither can be swapped for another
that serialises the same way. The JSON envelope carries the payload in base64,
its type, and one ``{keyid, sig}`` per signature; Custodian's ``keyid`` is the
signer's key fingerprint (:func:`audits.keys.public_key_fingerprint`). The
spec makes ``keyid`` an unauthenticated hint: it only selects which key to try,
and a verifier decides trust from the key that actually verified.

Verification fails closed: :func:`verify_signature` says yes only for a
signature that checks against the given key over this envelope's PAE.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from audits.errors import AuditError
from audits.keys import PublicKey, SigningKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"

Base64Text = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/_=-]*$")]


class EnvelopeError(AuditError):
    """An envelope that does not decode: not JSON, not base64, or missing a field."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of ``payload_type`` and ``payload``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


class Signature(BaseModel):
    """One signature of an envelope: ``sig`` in base64, ``keyid`` an unauthenticated hint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: str = ""
    sig: Base64Text

    def signature_bytes(self) -> bytes:
        return _b64decode(self.sig, "sig")


class Envelope(BaseModel):
    """The DSSE JSON envelope: ``payload`` (base64), ``payloadType``, ``signatures``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    payload: Base64Text
    payload_type: str = Field(alias="payloadType", min_length=1)
    signatures: tuple[Signature, ...] = Field(min_length=1)

    @field_validator("payload")
    @classmethod
    def _decodes(cls, value: str) -> str:
        try:
            _b64decode(value, "payload")
        except EnvelopeError as exc:
            raise ValueError(str(exc)) from None
        return value

    @classmethod
    def parse(cls, data: bytes, where: str) -> Envelope:
        """An envelope from JSON bytes; :class:`EnvelopeError` naming ``where`` otherwise."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "envelope"
            raise EnvelopeError(f"{where}: not a DSSE envelope: {field}: {error['msg']}") from None

    def payload_bytes(self) -> bytes:
        return _b64decode(self.payload, "payload")

    def signed_bytes(self) -> bytes:
        """What every signature of this envelope covers."""
        return pae(self.payload_type, self.payload_bytes())

    def to_json(self) -> dict[str, object]:
        """The envelope as the spec spells it (``payloadType``)."""
        return self.model_dump(mode="json", by_alias=True)


def sign_envelope(payload_type: str, payload: bytes, key: SigningKey) -> Envelope:
    """An envelope over ``payload`` with one signature by ``key`` (keyid: its fingerprint)."""
    signature = key.sign(pae(payload_type, payload))
    return Envelope(
        payload=base64.b64encode(payload).decode("ascii"),
        payload_type=payload_type,
        signatures=(
            Signature(keyid=key.fingerprint, sig=base64.b64encode(signature).decode("ascii")),
        ),
    )


def verify_signature(envelope: Envelope, signature: Signature, key: PublicKey) -> bool:
    """True only if ``signature`` is ``key``'s signature over ``envelope``'s PAE."""
    try:
        raw = signature.signature_bytes()
    except EnvelopeError:
        return False
    return key.verify(raw, envelope.signed_bytes())


def _b64decode(value: str, field: str) -> bytes:
    # The spec lets signers use either alphabet, and verifiers must accept both.
    alphabet = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(alphabet + "=" * (-len(alphabet) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(f"{field}: not base64 ({exc})") from None
