"""DSSE envelopes against the spec's own examples, and what a verifier must reject.

Expected values come from the DSSE repository (secure-systems-lab/dsse):
``protocol.md`` (the PAE example) and ``testvectors/vectors.json`` (Ed25519
keys, PAEs and signatures), not from this implementation.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audits.dsse import (
    IN_TOTO_PAYLOAD_TYPE,
    Envelope,
    EnvelopeError,
    Signature,
    pae,
    sign_envelope,
    verify_signature,
)
from audits.keys import SigningKey

# testvectors/vectors.json, key "A" (the RFC 8032 test 1 key).
SEED_A = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_A = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
STATEMENT = b'{"_type":"https://in-toto.io/Statement/v1"}'
SINGLE_SIGNATURE = {
    "payload": "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
        {
            "sig": "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQ"
            "afWm7AxBZNw5M9ixNHiCA==",
            "keyid": "A",
        }
    ],
}
SINGLE_SIGNATURE_PAE = (
    "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e20343320"
    "7b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
)


@pytest.fixture
def key_a() -> SigningKey:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(SEED_A))
    assert key.public_key.raw.hex() == PUBLIC_A
    return key


def test_pae_matches_the_protocol_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@pytest.mark.parametrize(
    ("payload_type", "payload", "expected_hex"),
    [
        pytest.param(IN_TOTO_PAYLOAD_TYPE, STATEMENT, SINGLE_SIGNATURE_PAE, id="statement"),
        pytest.param(
            IN_TOTO_PAYLOAD_TYPE,
            b"",
            "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020",
            id="empty-payload",
        ),
        pytest.param(
            "application/vnd.exämple+json",  # 28 characters, 29 bytes
            STATEMENT,
            "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e2034"
            "33207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f"
            "7631227d",
            id="non-ascii-type",
        ),
        pytest.param(
            IN_TOTO_PAYLOAD_TYPE,
            base64.urlsafe_b64decode("-_-_Pj8="),
            "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203520"
            "fbffbf3e3f",
            id="binary-payload",
        ),
    ],
)
def test_pae_matches_the_test_vectors(payload_type: str, payload: bytes, expected_hex: str) -> None:
    assert pae(payload_type, payload).hex() == expected_hex


def test_signing_reproduces_the_vector_signature(key_a: SigningKey) -> None:
    # Ed25519 is deterministic: the same key over the same PAE gives the vector's bytes.
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, STATEMENT, key_a)
    assert envelope.payload == SINGLE_SIGNATURE["payload"]
    assert envelope.signatures[0].sig == SINGLE_SIGNATURE["signatures"][0]["sig"]
    assert envelope.signatures[0].keyid == key_a.fingerprint
    assert envelope.to_json()["payloadType"] == IN_TOTO_PAYLOAD_TYPE


def test_the_vector_envelope_verifies(key_a: SigningKey) -> None:
    envelope = Envelope.parse(json.dumps(SINGLE_SIGNATURE).encode(), "vector")
    assert envelope.signed_bytes().hex() == SINGLE_SIGNATURE_PAE
    assert verify_signature(envelope, envelope.signatures[0], key_a.public_key)
    assert not verify_signature(envelope, envelope.signatures[0], SigningKey.generate().public_key)


def test_url_safe_base64_is_accepted(key_a: SigningKey) -> None:
    envelope = Envelope.parse(
        json.dumps(
            {
                "payload": "-_-_Pj8=",
                "payloadType": IN_TOTO_PAYLOAD_TYPE,
                "signatures": [
                    {
                        "sig": "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrs"
                        "GW886DbWNWcCmX5twLrAw==",
                        "keyid": "A",
                    }
                ],
            }
        ).encode(),
        "vector",
    )
    assert verify_signature(envelope, envelope.signatures[0], key_a.public_key)


def test_a_swapped_payload_type_is_rejected(key_a: SigningKey) -> None:
    swapped = {**SINGLE_SIGNATURE, "payloadType": "application/vnd.example.other+json"}
    envelope = Envelope.parse(json.dumps(swapped).encode(), "vector")
    assert not verify_signature(envelope, envelope.signatures[0], key_a.public_key)


def _flip(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("index", [0, 20, 42])
def test_a_bit_flip_in_the_payload_fails(key_a: SigningKey, index: int) -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, STATEMENT, key_a)
    altered = envelope.model_copy(update={"payload": _flip(envelope.payload, index)})
    assert not verify_signature(altered, altered.signatures[0], key_a.public_key)


@pytest.mark.parametrize("index", [0, 31, 63])
def test_a_bit_flip_in_the_signature_fails(key_a: SigningKey, index: int) -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, STATEMENT, key_a)
    signature = envelope.signatures[0]
    altered = Signature(keyid=signature.keyid, sig=_flip(signature.sig, index))
    assert not verify_signature(envelope, altered, key_a.public_key)


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"{}",
        json.dumps({**SINGLE_SIGNATURE, "signatures": []}).encode(),
        json.dumps({**SINGLE_SIGNATURE, "payload": "not base64!"}).encode(),
        json.dumps({**SINGLE_SIGNATURE, "payloadType": ""}).encode(),
        json.dumps({**SINGLE_SIGNATURE, "extra": 1}).encode(),
    ],
    ids=["not-json", "empty", "no-signatures", "bad-base64", "empty-type", "unknown-field"],
)
def test_malformed_envelopes_are_refused_naming_the_file(document: bytes) -> None:
    with pytest.raises(EnvelopeError, match=r"^signoffs/x\.dsse\.json: not a DSSE envelope"):
        Envelope.parse(document, "signoffs/x.dsse.json")


def test_an_undecodable_signature_verifies_nothing(key_a: SigningKey) -> None:
    envelope = sign_envelope(IN_TOTO_PAYLOAD_TYPE, STATEMENT, key_a)
    assert not verify_signature(envelope, Signature(sig="QUJD"), key_a.public_key)
