"""Encryption of sensitive data at rest: AES-256-GCM files under a named data key.

A sealed file, format version 1 (all integers big-endian)::

    magic     8 bytes   b"\\x89CUSTENC"  (0x89 is not UTF-8: no CSV reader takes it for text)
    version   1 byte    1
    key id    8 bytes   the first 8 bytes of SHA-256(KEY_ID_DOMAIN || key)
    nonce    12 bytes   random, fresh for every file written
    ctx len   2 bytes   length of the context
    context   n bytes   UTF-8; what the file holds (a dataset name), so that one
                        dataset's ciphertext cannot stand in for another's
    body      the AES-256-GCM ciphertext of the plaintext, then its 16-byte tag

The whole header (magic to context) is the GCM associated data: changing any
byte of the file makes decryption fail. The key id names the key without
revealing it, so a wrong key is reported as such before any decryption.

Keys are 32 random bytes, written as base64 or hex text: in an environment
variable, or in a key file readable by its owner only (mode 0600 or stricter), read
and written as :mod:`stores.files` says (never through a link, only a regular file
the user owns).
The key itself never appears in a message, a record or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.errors import (
    InvalidKey,
    MissingKey,
    TamperedCiphertext,
    UnsupportedFormat,
    WrongKey,
)
from stores.errors import StoreError
from stores.files import create_private_file, make_private_directory, read_secret_file

ALGORITHM = "AES-256-GCM"
FORMAT_VERSION = 1
MAGIC = b"\x89CUSTENC"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 8
KEY_ID_DOMAIN = b"custodian data key id v1\x00"
_FIXED_HEADER = len(MAGIC) + 1 + KEY_ID_BYTES + NONCE_BYTES + 2
_MAX_CONTEXT = 0xFFFF


@dataclass(frozen=True, repr=False)
class DataKey:
    """A 256-bit data key. Its ``key_id`` may be recorded anywhere; its bytes nowhere."""

    secret: bytes
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise InvalidKey(f"a data key has {KEY_BYTES} bytes, got {len(self.secret)}")
        digest = hashlib.sha256(KEY_ID_DOMAIN + self.secret).digest()
        object.__setattr__(self, "key_id", digest[:KEY_ID_BYTES].hex())

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> str:
        """The key as base64 text, the form key files and variables hold."""
        return base64.b64encode(self.secret).decode("ascii")


@dataclass(frozen=True)
class Header:
    version: int
    key_id: str
    nonce: bytes
    context: str
    size: int  # bytes of the header, i.e. where the body starts


@dataclass(frozen=True)
class KeySource:
    """Where a key is looked for: a variable holding it, or one naming a key file."""

    variable: str
    file_variable: str


DATA_KEY = KeySource("CUSTODIAN_DATA_KEY", "CUSTODIAN_DATA_KEY_FILE")
# The key a rotation re-encrypts to.
NEW_DATA_KEY = KeySource("CUSTODIAN_NEW_DATA_KEY", "CUSTODIAN_NEW_DATA_KEY_FILE")


def is_encrypted(data: bytes) -> bool:
    """Whether ``data`` starts like a sealed file (not whether it is intact)."""
    return data.startswith(MAGIC)


def encrypt_bytes(plaintext: bytes, key: DataKey, *, context: str) -> bytes:
    """Seal ``plaintext`` for ``context`` under ``key`` with a fresh random nonce."""
    label = context.encode("utf-8")
    if len(label) > _MAX_CONTEXT:
        raise UnsupportedFormat(f"context is {len(label)} bytes; at most {_MAX_CONTEXT}")
    nonce = secrets.token_bytes(NONCE_BYTES)
    header = b"".join(
        (
            MAGIC,
            bytes([FORMAT_VERSION]),
            bytes.fromhex(key.key_id),
            nonce,
            len(label).to_bytes(2, "big"),
            label,
        )
    )
    return header + AESGCM(key.secret).encrypt(nonce, plaintext, header)


def read_header(data: bytes, *, where: str) -> Header:
    """The header of a sealed file, checked for shape only (not authenticity)."""
    if not is_encrypted(data):
        raise UnsupportedFormat(f"{where}: not a Custodian encrypted file (no magic header)")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"{where}: encryption format version {version} is not supported "
            f"(this Custodian reads version {FORMAT_VERSION})"
        )
    if len(data) < _FIXED_HEADER:
        raise UnsupportedFormat(f"{where}: truncated encrypted file ({len(data)} bytes)")
    at = len(MAGIC) + 1
    key_id = data[at : at + KEY_ID_BYTES].hex()
    at += KEY_ID_BYTES
    nonce = data[at : at + NONCE_BYTES]
    at += NONCE_BYTES
    length = int.from_bytes(data[at : at + 2], "big")
    at += 2
    if len(data) < at + length + TAG_BYTES:
        raise UnsupportedFormat(f"{where}: truncated encrypted file ({len(data)} bytes)")
    try:
        context = data[at : at + length].decode("utf-8")
    except UnicodeDecodeError:
        raise TamperedCiphertext(
            f"{where}: authentication failed: file tampered (header context is not UTF-8)"
        ) from None
    return Header(FORMAT_VERSION, key_id, nonce, context, at + length)


def decrypt_bytes(data: bytes, key: DataKey, *, context: str | None, where: str) -> bytes:
    """The plaintext of a sealed file, or a typed error saying why not.

    ``context`` is what the file must hold (None accepts any: for files read
    outside the pipeline, where nothing says what they should be).
    """
    header = read_header(data, where=where)
    if header.key_id != key.key_id:
        raise WrongKey(
            f"{where}: encrypted under data key {header.key_id}, "
            f"but the data key given is {key.key_id}"
        )
    if context is not None and header.context != context:
        raise TamperedCiphertext(
            f"{where}: encrypted for {header.context!r}, expected {context!r} "
            "(file swapped or tampered)"
        )
    try:
        return AESGCM(key.secret).decrypt(header.nonce, data[header.size :], data[: header.size])
    except InvalidTag:
        raise TamperedCiphertext(
            f"{where}: authentication failed: file tampered or wrong key"
        ) from None


def parse_key(text: str, *, where: str) -> DataKey:
    """A key from its text form: 64 hex digits, or base64 (standard or URL-safe) of 32 bytes."""
    value = text.strip()
    try:
        if len(value) == 2 * KEY_BYTES:
            secret = bytes.fromhex(value)
        else:
            padded = value + "=" * (-len(value) % 4)
            secret = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        secret = b""
    if len(secret) != KEY_BYTES:
        raise InvalidKey(f"{where}: not a {KEY_BYTES}-byte key in base64 or hex")
    return DataKey(secret)


def read_key_file(path: Path) -> DataKey:
    """A key from a file that only its owner can read or write."""
    try:
        content = read_secret_file(path)
    except StoreError as err:
        raise InvalidKey(f"data key file {err}") from None
    except OSError as err:
        raise MissingKey(f"{path}: cannot read data key file ({err.strerror})") from None
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidKey(f"{path}: not a {KEY_BYTES}-byte key in base64 or hex") from None
    return parse_key(text, where=str(path))


def load_key(source: KeySource, environ: Mapping[str, str]) -> DataKey:
    """The key ``source`` names in ``environ``: exactly one of its two variables must be set."""
    value = environ.get(source.variable)
    file_name = environ.get(source.file_variable)
    if value and file_name:
        raise InvalidKey(
            f"both {source.variable} and {source.file_variable} are set; set exactly one"
        )
    if value:
        return parse_key(value, where=source.variable)
    if file_name:
        return read_key_file(Path(file_name))
    raise MissingKey(
        f"no data key: set {source.file_variable} to a key file (mode 0600) "
        f"or {source.variable} to the key (base64 or hex of {KEY_BYTES} bytes)"
    )


def write_key_file(path: Path, key: DataKey) -> None:
    """Write ``key`` to a new file of mode 0600; an existing file is never replaced.

    Missing parent directories are created private to their owner (0700).
    """
    try:
        make_private_directory(path.parent)
        create_private_file(path, key.encoded().encode("ascii") + b"\n")
    except FileExistsError:
        raise InvalidKey(f"{path}: already exists; a key file is never overwritten") from None
    except StoreError as err:
        raise InvalidKey(f"data key file {err}") from None
    except OSError as err:
        raise InvalidKey(f"{path}: cannot create data key file ({err.strerror})") from None
