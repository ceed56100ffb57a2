"""How a dataset's bytes are stored: plaintext, or sealed when its provenance says so.

A dataset registered with ``custodian data add --encrypt`` carries an
``encryption`` field in its provenance; it and every dataset derived from it
(ingested copy, splits) are stored as AES-256-GCM ciphertext
(``privacy.encryption``) in ``<name>.csv.enc``, bound to the record's name.
Readers decrypt in memory. The record decides, never the file: ciphertext
where the record says plaintext, or plaintext where it says ciphertext, is
refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from governance.errors import PolicyViolation
from governance.provenance import Provenance
from privacy.encryption import (
    DataKey,
    decrypt_bytes,
    encrypt_bytes,
    is_encrypted,
    read_header,
)

# Called only when a sealed dataset is read or written: plaintext data needs no key.
KeyProvider = Callable[[], DataKey]

SEALED_SUFFIX = ".enc"


class StorageMismatch(PolicyViolation):
    """A file's stored form disagrees with what its provenance record says."""


def data_file(directory: Path, name: str, record: Provenance) -> Path:
    """Where ``record``'s content lives in ``directory``: ``name.csv`` or ``name.csv.enc``."""
    return directory / (f"{name}.csv" + (SEALED_SUFFIX if record.encryption else ""))


def seal(plaintext: bytes, record: Provenance, key: KeyProvider) -> bytes:
    """``plaintext`` in the form ``record`` says it is stored in."""
    if record.encryption is None:
        return plaintext
    data_key = key()
    if data_key.key_id != record.encryption.key_id:
        raise StorageMismatch(
            f"{record.name}: provenance says data key {record.encryption.key_id}, "
            f"the data key given is {data_key.key_id}"
        )
    return encrypt_bytes(plaintext, data_key, context=record.name)


def unseal(stored: bytes, record: Provenance, key: KeyProvider, *, where: str) -> bytes:
    """The plaintext of ``stored``, decrypted in memory when ``record`` says it is sealed."""
    if record.encryption is None:
        if is_encrypted(stored):
            raise StorageMismatch(
                f"{where}: file is encrypted but its provenance record has no encryption field"
            )
        return stored
    if not is_encrypted(stored):
        raise StorageMismatch(
            f"{where}: provenance says {record.encryption.algorithm} under data key "
            f"{record.encryption.key_id}, but the file is not encrypted (plaintext refused)"
        )
    header = read_header(stored, where=where)
    if header.key_id != record.encryption.key_id:
        raise StorageMismatch(
            f"{where}: file is encrypted under data key {header.key_id}, its provenance "
            f"record says {record.encryption.key_id} (finish `custodian data rekey`?)"
        )
    return decrypt_bytes(stored, key(), context=record.name, where=where)
