"""Ed25519 keys that sign audit checkpoints.

A private key is a PKCS#8 PEM file, **not encrypted**, mode 0600; a directory
this module creates for it gets mode 0700. The pipeline signs unattended at the
end of every command, so a passphrase would have to sit in an environment
variable or a file next to the key, which moves the secret without protecting
it. The protection is the file mode and keeping the key out of the project:
the CLI keeps it under ``$CUSTODIAN_HOME``, never in git. Anyone who can read
the key file can sign checkpoints; see :mod:`audits.log` for what that allows.

A key file readable by group or others is refused on load, as ssh does: a key
that others could have copied proves nothing about who signed. Key files are
read and written as :mod:`stores.files` says (never through a link, only a
regular file the user owns).

Private keys never appear in reprs, messages or return values; only the
public key and its fingerprint leave a :class:`SigningKey`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audits.errors import AuditError
from stores.errors import StoreError
from stores.files import (
    create_private_file,
    make_private_directory,
    read_secret_file,
    read_store_file,
)


class SigningKeyError(AuditError):
    """A key file is missing, unreadable, insecure, or not an Ed25519 key."""


class KeyFileExists(SigningKeyError):
    """Creating a key would overwrite one that already exists."""


class PublicKey:
    """An Ed25519 public key, compared and identified by its fingerprint."""

    __slots__ = ("_key", "raw", "fingerprint")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.fingerprint = public_key_fingerprint(self.raw)

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        """Parse a SubjectPublicKeyInfo PEM; :class:`SigningKeyError` unless it is Ed25519."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"not an Ed25519 public key: {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, safe to publish and to commit."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True only if ``signature`` is this key's Ed25519 signature over ``data``."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey(fingerprint={self.fingerprint!r})"


class SigningKey:
    """An Ed25519 private key that signs bytes and shows only its public half."""

    __slots__ = ("_private", "public_key")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = PublicKey(private.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key held only in memory (tests, or before :func:`create_signing_key`)."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the public key."""
        return self.public_key.fingerprint

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``data``."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(fingerprint={self.fingerprint!r})"


def public_key_fingerprint(raw_public_key: bytes) -> str:
    """Lower-case hex SHA-256 of the 32-byte raw Ed25519 public key."""
    return hashlib.sha256(raw_public_key).hexdigest()


def create_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Generate a key and write it to ``path`` (0600); raise :class:`KeyFileExists` if taken.

    The file appears complete or not at all, and two processes racing to create
    it never overwrite each other: the second one gets :class:`KeyFileExists`.
    """
    target = Path(path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        make_private_directory(target.parent)
        create_private_file(target, pem)
    except FileExistsError as exc:
        raise KeyFileExists(f"a signing key already exists at {target}") from exc
    except StoreError as exc:
        raise SigningKeyError(f"signing key {exc}") from None
    return SigningKey(private)


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read an Ed25519 private key written by :func:`create_signing_key`."""
    target = Path(path)
    pem = _read_private_file(target)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError is how cryptography says "encrypted"; the message names no key material.
        raise SigningKeyError(f"{target}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningKeyError(f"{target}: not an Ed25519 private key")
    return SigningKey(private)


def load_or_create_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load the key at ``path``, creating it on first use."""
    target = Path(path)
    if target.exists():
        return load_signing_key(target)
    try:
        return create_signing_key(target)
    except KeyFileExists:
        # Another process created it between our check and our link: use theirs.
        return load_signing_key(target)


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    """Read a SubjectPublicKeyInfo PEM file."""
    target = Path(path)
    try:
        data = read_store_file(target)
    except StoreError as exc:
        raise SigningKeyError(f"public key {exc}") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read public key {target}: {exc.strerror}") from exc
    if data is None:
        raise SigningKeyError(f"cannot read public key {target}: No such file or directory")
    return PublicKey.from_pem(data)


def _read_private_file(target: Path) -> bytes:
    try:
        return read_secret_file(target)
    except StoreError as exc:
        raise SigningKeyError(f"signing key {exc}") from None
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {target}: {exc.strerror}") from exc
