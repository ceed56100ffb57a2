"""Who a dataset is about: compare the people of two datasets without keeping their ids.

A dataset's ``population`` (``Provenance.population``) keys its lifetime privacy budget,
so a dataset about people already registered under a population must name it: otherwise
the same people would get a fresh budget. ``custodian data add`` compares the new file's
identifier values with every registered population's, as sets of SHA-256 digests held in
memory only; neither the values nor their digests are written to any metadata (a digest
of a short id is as good as the id to anyone who can enumerate ids).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

__all__ = ["Overlap", "identifier_digests", "overlaps"]

# Separates this use of SHA-256 from any other hash of the same values.
_DOMAIN = b"custodian.population.identifier\0"


def _canonical(value: object) -> str:
    # The same id read as 12 (int), 12.0 (float, a column with gaps) or "12" is one person.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def identifier_digests(values: pd.Series) -> frozenset[bytes]:
    """SHA-256 digests of the non-missing identifier values, in canonical text form."""
    return frozenset(
        hashlib.sha256(_DOMAIN + _canonical(value).encode()).digest()
        for value in values.dropna().unique()
    )


@dataclass(frozen=True, slots=True)
class Overlap:
    """People a new dataset shares with a registered dataset of ``population``."""

    population: str
    dataset: str
    shared: int


def overlaps(
    new: frozenset[bytes], registered: Iterable[tuple[str, str, frozenset[bytes]]]
) -> list[Overlap]:
    """Registered (population, dataset name, digests) sharing at least one person with ``new``."""
    found = [
        Overlap(population, name, len(new & digests)) for population, name, digests in registered
    ]
    return [overlap for overlap in found if overlap.shared]
