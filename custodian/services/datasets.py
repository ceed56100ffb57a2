"""Reading and writing a directory of ``<name>.csv`` + ``<name>.provenance.json`` pairs.

A sealed dataset's content is ``<name>.csv.enc`` instead (``governance.storage``):
it is decrypted in memory on read and encrypted before it is written, with the
data key from ``CUSTODIAN_DATA_KEY`` or ``CUSTODIAN_DATA_KEY_FILE``, loaded
only when a sealed dataset is actually touched.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pandas as pd

from audits.files import atomic_write_bytes, atomic_write_json
from custodian.params import PolicyParams
from governance.errors import InputError
from governance.ingest import LicensePolicy
from governance.provenance import Provenance
from governance.registry import parse_model
from governance.storage import SEALED_SUFFIX, data_file, seal, unseal
from governance.tables import read_csv_bytes, sha256_bytes
from privacy.encryption import DATA_KEY, DataKey, decrypt_bytes, is_encrypted, load_key


@functools.cache
def data_key() -> DataKey:
    """The data key of this process, read from the environment once, when first needed."""
    return load_key(DATA_KEY, os.environ)


def load_record(path: Path) -> Provenance:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path}: unreadable provenance record ({err.__class__.__name__})"
        ) from None
    return parse_model(Provenance, content, where=str(path))


def load_dataset(directory: Path, name: str) -> tuple[Provenance, pd.DataFrame]:
    """One dataset, its (decrypted) content checked against the hash its record carries."""
    record = load_record(directory / f"{name}.provenance.json")
    data_path = data_file(directory, name, record)
    if not data_path.is_file():
        raise InputError(f"{data_path}: file not found")
    content = unseal(data_path.read_bytes(), record, data_key, where=str(data_path))
    if sha256_bytes(content) != record.sha256:
        raise InputError(f"{data_path}: content does not match the sha256 in its record")
    return record, read_csv_bytes(content, where=str(data_path))


def write_dataset(directory: Path, name: str, content: bytes, record: Provenance) -> None:
    """Write ``content`` (plaintext) in the form ``record`` says, then the record beside it."""
    atomic_write_bytes(data_file(directory, name, record), seal(content, record, data_key))
    atomic_write_json(directory / f"{name}.provenance.json", record.to_json())


def load_ingested(directory: Path) -> list[tuple[Provenance, pd.DataFrame]]:
    if not directory.is_dir():
        raise InputError(f"{directory}: directory not found (run the ingest stage)")
    names = sorted(
        p.name.removesuffix(".provenance.json") for p in directory.glob("*.provenance.json")
    )
    if not names:
        raise InputError(f"{directory}: no datasets (no *.provenance.json)")
    return [load_dataset(directory, name) for name in names]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV file named on the command line, decrypted in memory if it is sealed.

    No record says which dataset a loose file should hold, so any context is accepted.
    """
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    content = path.read_bytes()
    if is_encrypted(content):
        content = decrypt_bytes(content, data_key(), context=None, where=str(path))
    return read_csv_bytes(content, where=str(path))


def table_name(path: Path) -> str:
    """``refs/bench.csv`` and ``refs/bench.csv.enc`` are both ``bench``."""
    return Path(path.name.removesuffix(SEALED_SUFFIX)).stem


def license_policy(policy: PolicyParams) -> LicensePolicy:
    """params.yaml's license policy, as ingest and ``data add`` both apply it."""
    return LicensePolicy(
        intended_use=policy.intended_use,
        allowed=frozenset(policy.allowed_licenses),
        approved_refs=dict(policy.approved_license_refs),
    )
