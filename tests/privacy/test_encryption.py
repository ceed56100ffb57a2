"""The sealed-file format: round trip, every kind of damage, and key handling."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.encryption import (
    DATA_KEY,
    NEW_DATA_KEY,
    DataKey,
    decrypt_bytes,
    encrypt_bytes,
    is_encrypted,
    load_key,
    parse_key,
    read_header,
    read_key_file,
    write_key_file,
)
from privacy.errors import (
    EncryptionInputError,
    InvalidKey,
    MissingKey,
    TamperedCiphertext,
    UnsupportedFormat,
    WrongKey,
)

SECRET = bytes(range(32))
KEY = DataKey(SECRET)
PLAINTEXT = b"id,diagnosis\n1,rare-condition-x\n2,none\n"
CONTEXT = "clinic"
# magic 8 + version 1 + key id 8 + nonce 12 + context length 2
KEY_ID_AT, NONCE_AT, LENGTH_AT, CONTEXT_AT = 9, 17, 29, 31


def sealed() -> bytes:
    return encrypt_bytes(PLAINTEXT, KEY, context=CONTEXT)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_round_trip_and_the_documented_layout() -> None:
    blob = sealed()
    assert decrypt_bytes(blob, KEY, context=CONTEXT, where="f") == PLAINTEXT
    assert PLAINTEXT not in blob and b"rare-condition-x" not in blob
    # An independent reading of the documented layout with the bare AES-GCM primitive.
    key_id = hashlib.sha256(b"custodian data key id v1\x00" + SECRET).hexdigest()[:16]
    assert KEY.key_id == key_id
    assert blob[:8] == b"\x89CUSTENC" and blob[8] == 1
    assert blob[KEY_ID_AT:NONCE_AT].hex() == key_id
    assert int.from_bytes(blob[LENGTH_AT:CONTEXT_AT], "big") == len(CONTEXT)
    header_end = CONTEXT_AT + len(CONTEXT)
    assert blob[CONTEXT_AT:header_end] == CONTEXT.encode()
    nonce = blob[NONCE_AT:LENGTH_AT]
    assert AESGCM(SECRET).decrypt(nonce, blob[header_end:], blob[:header_end]) == PLAINTEXT
    assert len(blob) == header_end + len(PLAINTEXT) + 16


def test_every_file_gets_a_fresh_nonce() -> None:
    first, second = sealed(), sealed()
    assert first[NONCE_AT:LENGTH_AT] != second[NONCE_AT:LENGTH_AT]
    assert first != second


def test_key_is_never_shown() -> None:
    assert SECRET.hex() not in repr(KEY) and KEY.key_id in repr(KEY)
    assert base64.b64encode(SECRET).decode() not in repr(KEY)


def test_wrong_key_names_both_key_ids() -> None:
    other = DataKey(bytes(32))
    with pytest.raises(WrongKey) as caught:
        decrypt_bytes(sealed(), other, context=CONTEXT, where="data/x.csv.enc")
    message = str(caught.value)
    assert KEY.key_id in message and other.key_id in message and "data/x.csv.enc" in message


@pytest.mark.parametrize(
    ("region", "offset"),
    [
        ("nonce", NONCE_AT + 3),
        ("context length", LENGTH_AT + 1),
        ("context", CONTEXT_AT),
        ("ciphertext", CONTEXT_AT + len(CONTEXT) + 5),
        ("tag", -1),
    ],
)
def test_any_tampered_byte_fails_authentication(region: str, offset: int) -> None:
    blob = sealed()
    at = offset % len(blob)
    with pytest.raises(TamperedCiphertext):
        decrypt_bytes(flip(blob, at), KEY, context=CONTEXT, where="f")
    # Without the expected context check too: GCM alone catches it.
    with pytest.raises((TamperedCiphertext, UnsupportedFormat)):
        decrypt_bytes(flip(blob, at), KEY, context=None, where="f")


def test_tampered_header_fields_are_named() -> None:
    blob = sealed()
    with pytest.raises(UnsupportedFormat, match="no magic header"):
        decrypt_bytes(flip(blob, 2), KEY, context=CONTEXT, where="f")
    with pytest.raises(UnsupportedFormat, match="version 0 is not supported"):
        decrypt_bytes(flip(blob, 8), KEY, context=CONTEXT, where="f")
    with pytest.raises(WrongKey):  # a changed key id reads as another key
        decrypt_bytes(flip(blob, KEY_ID_AT), KEY, context=CONTEXT, where="f")


def test_ciphertext_of_another_dataset_is_refused() -> None:
    blob = encrypt_bytes(PLAINTEXT, KEY, context="clinic.test")
    with pytest.raises(TamperedCiphertext, match="encrypted for 'clinic.test', expected 'clinic"):
        decrypt_bytes(blob, KEY, context="clinic.train", where="f")


@pytest.mark.parametrize("keep", [0, 5, 20, 31, 40, -1])
def test_truncated_file(keep: int) -> None:
    blob = sealed()[:keep]
    with pytest.raises((UnsupportedFormat, TamperedCiphertext)):
        decrypt_bytes(blob, KEY, context=CONTEXT, where="f")


def test_plaintext_is_not_taken_for_ciphertext() -> None:
    assert not is_encrypted(PLAINTEXT) and is_encrypted(sealed())
    with pytest.raises(UnsupportedFormat, match="not a Custodian encrypted file"):
        read_header(PLAINTEXT, where="f")
    # The magic is not UTF-8: no CSV reader mistakes ciphertext for text.
    with pytest.raises(UnicodeDecodeError):
        sealed().decode("utf-8")


@pytest.mark.parametrize(
    "text",
    [
        SECRET.hex(),
        SECRET.hex().upper(),
        base64.b64encode(SECRET).decode(),
        base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
        f"  {base64.b64encode(SECRET).decode()}\n",
    ],
)
def test_key_text_forms(text: str) -> None:
    assert parse_key(text, where="v").key_id == KEY.key_id


@pytest.mark.parametrize(
    "text", ["", "abc", SECRET.hex()[:-2], base64.b64encode(bytes(31)).decode()]
)
def test_bad_key_text_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        parse_key(text, where="CUSTODIAN_DATA_KEY")
    assert "CUSTODIAN_DATA_KEY: not a 32-byte key" in str(caught.value)
    assert not text or text not in str(caught.value)


def test_load_key_from_variable_or_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k"
    write_key_file(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(DATA_KEY, {"CUSTODIAN_DATA_KEY_FILE": str(path)}).key_id == KEY.key_id
    assert load_key(DATA_KEY, {"CUSTODIAN_DATA_KEY": SECRET.hex()}).key_id == KEY.key_id
    new = {"CUSTODIAN_NEW_DATA_KEY": SECRET.hex(), "CUSTODIAN_DATA_KEY": "x"}
    assert load_key(NEW_DATA_KEY, new).key_id == KEY.key_id
    with pytest.raises(InvalidKey, match="already exists"):
        write_key_file(path, DataKey.generate())
    assert read_key_file(path).key_id == KEY.key_id  # not overwritten


def test_missing_and_ambiguous_keys(tmp_path: Path) -> None:
    with pytest.raises(MissingKey, match="set CUSTODIAN_DATA_KEY_FILE"):
        load_key(DATA_KEY, {})
    with pytest.raises(MissingKey, match="cannot read data key file"):
        load_key(DATA_KEY, {"CUSTODIAN_DATA_KEY_FILE": str(tmp_path / "absent")})
    both = {"CUSTODIAN_DATA_KEY": SECRET.hex(), "CUSTODIAN_DATA_KEY_FILE": "k"}
    with pytest.raises(InvalidKey, match="set exactly one"):
        load_key(DATA_KEY, both)
    assert issubclass(MissingKey, EncryptionInputError)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    write_key_file(path, KEY)
    path.chmod(mode)
    with pytest.raises(InvalidKey, match=f"accessible to other users \\(mode {mode:04o}\\)"):
        read_key_file(path)
    path.chmod(0o400)
    assert read_key_file(path).key_id == KEY.key_id
