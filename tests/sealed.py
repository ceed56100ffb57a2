"""Helpers for tests of encrypted datasets: a key file, a plaintext outside the project."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from privacy.encryption import DataKey, read_key_file
from tests.conftest import custodian

HEADER = "patient,visit_year,age,income_k,marker,outcome"


def clinic_csv(patients: int = 150) -> str:
    """Two visits per patient; random label and features, so no check finds leakage."""
    rng = random.Random(7)
    lines = [HEADER]
    for patient in range(1001, 1001 + patients):
        age = rng.randint(20, 80)
        for year in (2020, 2021):
            income = round(rng.uniform(10, 200), 5)
            marker = round(rng.gauss(0, 1), 6)
            lines.append(f"{patient},{year},{age},{income},{marker},{rng.randint(0, 1)}")
    return "\n".join(lines) + "\n"


def new_key(path: Path, cwd: Path) -> DataKey:
    path.parent.mkdir(parents=True, exist_ok=True)
    result = custodian("data", "keygen", str(path), cwd=cwd, check=True)
    key = read_key_file(path)
    assert key.key_id in result.stdout
    return key


def use_key(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Every CLI run from here on gets this key file (the CLI inherits os.environ)."""
    monkeypatch.delenv("CUSTODIAN_DATA_KEY", raising=False)
    monkeypatch.setenv("CUSTODIAN_DATA_KEY_FILE", str(path))


def add_encrypted(repo: Path, plaintext: Path, *extra: str):
    return custodian(
        "data",
        "add",
        str(plaintext),
        "--name",
        "clinic",
        "--license",
        "CC-BY-4.0",
        "--source",
        "https://example.org/clinic.csv",
        "--identifier",
        "patient",
        "--time",
        "visit_year",
        "--sensitive",
        "age,income_k",
        "--label",
        "outcome",
        "--encrypt",
        *extra,
        cwd=repo,
    )


def files_containing(roots: list[Path], needles: list[bytes]) -> list[Path]:
    """Every file under ``roots`` that holds any of ``needles``."""
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if any(needle in data for needle in needles):
                found.append(path)
    return found


def plaintext_needles(text: str) -> list[bytes]:
    """The header line and every data line: what must never reach the cache or a remote."""
    return [line.encode() for line in text.splitlines()]
