"""Ed25519 keys that sign audit checkpoints.

A private key is a PKCS#8 PEM file, **not encrypted**, mode 0600; a directory
this module creates for it gets mode 0700. The pipeline signs unattended at the
end of every command, so a passphrase would have to sit in an environment
variable or a file next to the key, which moves the secret without protecting
it. The protection is the file mode and keeping the key out of the project:
the CLI keeps it under ``$CUSTODIAN_HOME``, never in git. Anyone who can read
the key file can sign checkpoints; see :mod:`audits.log` for what that allows.

A key file readable by group or others is refused on load, as ssh does: a key
that others could have copied proves nothing about who signed.

Private keys never appear in reprs, messages or return values; only the
public key and its fingerprint leave a :class:`SigningKey`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audits.errors import AuditError
from audits.files import _fsync_directory

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


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
    _make_private_directory(target.parent)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _publish_exclusively(target, pem)
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
        data = target.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read public key {target}: {exc.strerror}") from exc
    return PublicKey.from_pem(data)


def _read_private_file(target: Path) -> bytes:
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {target}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SigningKeyError(f"signing key {target} is not a regular file")
        if os.name == "posix" and mode & 0o077:
            raise SigningKeyError(
                f"signing key {target} is accessible to other users "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {target}"
            )
        return handle.read()


def _make_private_directory(directory: Path) -> None:
    if directory.is_dir():
        # An existing directory belongs to its owner; the key file's own mode protects the key.
        return
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; say exactly what we mean.
    os.chmod(directory, PRIVATE_DIR_MODE)


def _publish_exclusively(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() publishes the finished file atomically and, unlike rename(),
        # refuses to replace a key another process has just created.
        try:
            os.link(temporary, target)
        except FileExistsError as exc:
            raise KeyFileExists(f"a signing key already exists at {target}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(target.parent)
