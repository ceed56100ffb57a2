"""Reading a directory of ``<name>.csv`` + ``<name>.provenance.json`` pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from governance.errors import InputError
from governance.provenance import Provenance
from governance.registry import parse_model
from governance.tables import read_csv_bytes, sha256_bytes


def load_record(path: Path) -> Provenance:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(
            f"{path}: unreadable provenance record ({err.__class__.__name__})"
        ) from None
    return parse_model(Provenance, content, where=str(path))


def load_dataset(directory: Path, name: str) -> tuple[Provenance, pd.DataFrame]:
    """One dataset, its content checked against the hash its record carries."""
    record = load_record(directory / f"{name}.provenance.json")
    data_path = directory / f"{name}.csv"
    if not data_path.is_file():
        raise InputError(f"{data_path}: file not found")
    content = data_path.read_bytes()
    if sha256_bytes(content) != record.sha256:
        raise InputError(f"{data_path}: content does not match the sha256 in its record")
    return record, read_csv_bytes(content, where=str(data_path))


def load_ingested(directory: Path) -> list[tuple[Provenance, pd.DataFrame]]:
    if not directory.is_dir():
        raise InputError(f"{directory}: directory not found (run the ingest stage)")
    names = sorted(
        p.name.removesuffix(".provenance.json") for p in directory.glob("*.provenance.json")
    )
    if not names:
        raise InputError(f"{directory}: no datasets (no *.provenance.json)")
    return [load_dataset(directory, name) for name in names]
