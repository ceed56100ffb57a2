"""Ed25519 signing keys: file modes, races, refusal of insecure files, no leaks in reprs."""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audits.keys import (
    KeyFileExists,
    PublicKey,
    SigningKey,
    SigningKeyError,
    create_signing_key,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    public_key_fingerprint,
)

# RFC 8032 section 7.1, TEST 2: an independent check that signatures are plain Ed25519.
RFC8032_PUBLIC = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
RFC8032_MESSAGE = "72"
RFC8032_SIGNATURE = (
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_key_file_is_private_in_a_private_directory(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keys" / "pipeline.pem"
    key = load_or_create_signing_key(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_signing_key(path).fingerprint == key.fingerprint
    assert [p.name for p in path.parent.iterdir()] == ["pipeline.pem"], "temporary file left"


def test_load_or_create_returns_the_same_key_every_time(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    first = load_or_create_signing_key(path)
    assert load_or_create_signing_key(path).fingerprint == first.fingerprint


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_or_create_signing_key(path), range(16)))
    assert {key.fingerprint for key in keys} == {load_signing_key(path).fingerprint}


def test_create_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    original = create_signing_key(path).fingerprint
    with pytest.raises(KeyFileExists):
        create_signing_key(path)
    assert load_signing_key(path).fingerprint == original


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    create_signing_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_signing_key(path)


def test_missing_or_garbage_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(tmp_path / "absent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    os.chmod(garbage, 0o600)
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_signing_key(garbage)


def test_signatures_verify_only_under_the_signing_key() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signature = key.sign(b"tree head")
    assert key.public_key.verify(signature, b"tree head")
    assert not key.public_key.verify(signature, b"tree head!")
    assert not other.public_key.verify(signature, b"tree head")
    assert not key.public_key.verify(b"\x00" * 64, b"tree head")


def test_verification_matches_rfc8032() -> None:
    public = PublicKey(Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC8032_PUBLIC)))
    message, signature = bytes.fromhex(RFC8032_MESSAGE), bytes.fromhex(RFC8032_SIGNATURE)
    assert public.verify(signature, message)
    assert not public.verify(signature, message + b"\x00")


def test_fingerprint_is_sha256_of_the_raw_public_key() -> None:
    key = SigningKey.generate()
    assert key.fingerprint == hashlib.sha256(key.public_key.raw).hexdigest()
    assert public_key_fingerprint(key.public_key.raw) == key.fingerprint


def test_public_key_round_trips_through_pem(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "pipeline.pub"
    path.write_bytes(key.public_key.to_pem())
    assert load_public_key(path) == key.public_key
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_private_key_never_shows_in_reprs(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    key = create_signing_key(path)
    body = b"".join(path.read_bytes().splitlines()[1:-1]).decode()
    for text in (repr(key), str(key), repr(key.public_key)):
        assert body not in text
        assert "PRIVATE" not in text
        assert key.fingerprint in text
    assert not hasattr(key, "__dict__"), "a __dict__ would let vars() reach the private key"
