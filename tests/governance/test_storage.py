"""The record decides how a dataset is stored; any disagreement with the file is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from governance.provenance import ColumnSpec, ColumnType, Encryption, Provenance
from governance.storage import StorageMismatch, data_file, seal, unseal
from privacy.encryption import DataKey, encrypt_bytes, is_encrypted
from privacy.errors import TamperedCiphertext, WrongKey

KEY = DataKey(bytes(range(32)))
OTHER = DataKey(bytes(32))
CONTENT = b"a,b\n1,2\n"


def record(key: DataKey | None, name: str = "clinic") -> Provenance:
    return Provenance(
        name=name,
        source="https://example.org/clinic.csv",
        license="MIT",
        retrieved_at=datetime(2026, 1, 1, tzinfo=UTC),
        sha256="0" * 64,
        rows=1,
        columns=[ColumnSpec(name="a", type=ColumnType.integer)],
        encryption=Encryption(key_id=key.key_id) if key else None,
    )


def no_key() -> DataKey:
    raise AssertionError("plaintext data must not ask for a key")


def test_plaintext_record_stores_plaintext_without_asking_for_a_key() -> None:
    plain = record(None)
    assert seal(CONTENT, plain, no_key) == CONTENT
    assert unseal(CONTENT, plain, no_key, where="f") == CONTENT
    assert data_file(Path("d"), "clinic", plain) == Path("d/clinic.csv")
    assert "encryption" not in plain.to_json()  # absent, so old records keep their bytes


def test_sealed_record_round_trips_bound_to_its_name() -> None:
    sealed = record(KEY)
    stored = seal(CONTENT, sealed, lambda: KEY)
    assert is_encrypted(stored) and CONTENT not in stored
    assert unseal(stored, sealed, lambda: KEY, where="f") == CONTENT
    assert data_file(Path("d"), "train", sealed) == Path("d/train.csv.enc")
    assert sealed.to_json()["encryption"] == {
        "algorithm": "AES-256-GCM",
        "format": 1,
        "key_id": KEY.key_id,
    }
    with pytest.raises(TamperedCiphertext, match="encrypted for 'clinic', expected 'clinic.test'"):
        unseal(stored, record(KEY, "clinic.test"), lambda: KEY, where="f")
    with pytest.raises(WrongKey):
        unseal(stored, sealed, lambda: OTHER, where="f")


@pytest.mark.parametrize(
    ("stored", "held_by", "message"),
    [
        (encrypt_bytes(CONTENT, KEY, context="clinic"), None, "has no encryption field"),
        (CONTENT, KEY, "the file is not encrypted (plaintext refused)"),
        (encrypt_bytes(CONTENT, OTHER, context="clinic"), KEY, "its provenance record says"),
    ],
)
def test_file_and_record_that_disagree_are_refused(stored, held_by, message) -> None:
    with pytest.raises(StorageMismatch, match=re.escape(message)):
        unseal(stored, record(held_by), lambda: KEY, where="f")


def test_sealing_under_a_key_other_than_the_records_is_refused() -> None:
    with pytest.raises(StorageMismatch, match=f"provenance says data key {KEY.key_id}"):
        seal(CONTENT, record(KEY), lambda: OTHER)
