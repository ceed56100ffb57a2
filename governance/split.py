"""Deterministic, seeded train/val/test splits that respect groups and time.

Derived datasets carry their parent's hash and license obligations and name
the stage that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from governance.checks import CheckConfig
from governance.checks.scan import prepare_scan
from governance.errors import InputError
from governance.provenance import ColumnRole, ParentRef, Provenance

SPLITS = ("train", "val", "test")


class Strategy(StrEnum):
    random = "random"
    group = "group"
    time = "time"
    group_time = "group_time"  # cohorts by first time; later rows of earlier cohorts dropped


@dataclass(frozen=True)
class SplitResult:
    frames: dict[str, pd.DataFrame]  # split name -> rows, in file order
    dropped_rows: int  # rows removed by group_time purging
    group_column: str | None
    time_column: str | None


def split_frame(
    frame: pd.DataFrame,
    *,
    strategy: Strategy,
    fractions: dict[str, float],
    seed: int,
    group_column: str | None,
    time_column: str | None,
    content_key: np.ndarray | None = None,
) -> SplitResult:
    """Assign every row to train/val/test (or drop it, for ``group_time``).

    ``content_key`` (one hash per row of its compared content) links groups
    whose rows are identical: twins with identical records, or one person
    registered under two identifiers, then land in the same split instead of
    putting the same row in train and test.
    """
    needs_group = strategy in (Strategy.group, Strategy.group_time)
    needs_time = strategy in (Strategy.time, Strategy.group_time)
    if needs_group and group_column is None:
        raise InputError(f"split.strategy={strategy}: the dataset declares no identifier column")
    if needs_time and time_column is None:
        raise InputError(f"split.strategy={strategy}: the dataset declares no time column")
    for column in (group_column if needs_group else None, time_column if needs_time else None):
        if column is not None and frame[column].isna().any():
            raise InputError(f"split: column {column!r} has missing values; cannot split on it")

    groups = None
    if needs_group:
        groups = frame[group_column].to_numpy()
        if content_key is not None:
            groups = _link_identical_content(groups, content_key)
    assignment = _ASSIGNERS[strategy](
        frame, fractions, np.random.default_rng(seed), groups, time_column
    )
    dropped = int((assignment < 0).sum())
    frames = {name: frame[assignment == i] for i, name in enumerate(SPLITS)}
    for name, part in frames.items():
        if fractions[name] > 0 and part.empty:
            purged = (
                f" after dropping {dropped} rows of groups crossing a time cut" if dropped else ""
            )
            raise InputError(
                f"split: {name} split is empty{purged}; the dataset is too small "
                f"for split.strategy={strategy}"
            )
    return SplitResult(
        frames,
        dropped,
        group_column if needs_group else None,
        time_column if needs_time else None,
    )


def _link_identical_content(groups: np.ndarray, content_key: np.ndarray) -> np.ndarray:
    """Merge groups that share a row content: connected components of group—content edges."""
    group_codes, group_values = pd.factorize(groups, sort=True)
    content_codes, content_values = pd.factorize(content_key)
    n_groups = len(group_values)
    edges = coo_matrix(
        (np.ones(len(groups)), (group_codes, n_groups + content_codes)),
        shape=(n_groups + len(content_values),) * 2,
    )
    _, component = connected_components(edges, directed=False)
    # Name each merged group after its smallest member so the result is stable.
    first_member = pd.Series(group_values).groupby(component[:n_groups]).transform("min")
    return first_member.to_numpy()[group_codes]


def _cut(weights: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """Assign ordered units (with row counts ``weights``) to splits by cumulative share."""
    bounds = np.cumsum([fractions[name] for name in SPLITS])[:-1]
    share = (np.cumsum(weights) - weights / 2) / weights.sum()
    return np.searchsorted(bounds, share, side="right")


def _random(frame, fractions, rng, _groups, _time) -> np.ndarray:
    order = rng.permutation(len(frame))
    assignment = np.empty(len(frame), dtype=int)
    assignment[order] = _cut(np.ones(len(frame)), fractions)
    return assignment


def _group(frame, fractions, rng, groups, _time) -> np.ndarray:
    codes, uniques = pd.factorize(groups, sort=True)
    order = rng.permutation(len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques))
    group_split = np.empty(len(uniques), dtype=int)
    group_split[order] = _cut(sizes[order].astype(float), fractions)
    return group_split[codes]


def _time(frame, fractions, _rng, _groups, time) -> np.ndarray:
    # Equal timestamps go to one split: the cut falls between distinct times.
    codes, uniques = pd.factorize(frame[time], sort=True)
    sizes = np.bincount(codes, minlength=len(uniques)).astype(float)
    return _cut(sizes, fractions)[codes]


def _group_time(frame, fractions, rng, groups, time) -> np.ndarray:
    # Cohorts: groups ordered by first appearance, so later entrants are tested.
    codes, uniques = pd.factorize(groups, sort=True)
    times = frame[time].to_numpy()
    first = pd.Series(times).groupby(codes).min().to_numpy()
    order = np.lexsort((rng.permutation(len(uniques)), first))
    sizes = np.bincount(codes, minlength=len(uniques)).astype(float)
    group_split = np.empty(len(uniques), dtype=int)
    group_split[order] = _cut(sizes[order], fractions)
    assignment = group_split[codes]
    # An early cohort's later rows postdate the next split's first rows; purge them
    # so that no training row is later than an evaluation row.
    for earlier, later in ((0, 1), (0, 2), (1, 2)):
        if (assignment == later).any():
            start = times[assignment == later].min()
            assignment[(assignment == earlier) & (times > start)] = -1
    return assignment


_ASSIGNERS = {
    Strategy.random: _random,
    Strategy.group: _group,
    Strategy.time: _time,
    Strategy.group_time: _group_time,
}


def derived_provenance(
    parent: Provenance, *, split: str, sha256: str, rows: int, stage: str
) -> Provenance:
    """The record of one split: the parent's schema and obligations, its own hash."""
    return Provenance.model_validate(
        {
            **parent.model_dump(),
            "name": f"{parent.name}.{split}",
            "source": f"stage:{stage}",
            "sha256": sha256,
            "rows": rows,
            "parents": [ParentRef(name=parent.name, sha256=parent.sha256, license=parent.license)],
            "produced_by": stage,
        }
    )


def group_and_time_columns(record: Provenance) -> tuple[str | None, str | None]:
    return record.column(ColumnRole.identifier), record.column(ColumnRole.time)


def content_key(frame: pd.DataFrame, record: Provenance) -> np.ndarray:
    """Per-row hash of what the exact-duplicate check compares (features and label).

    Uses the leakage check's own normalisation, so rows the check would call
    duplicates are exactly the rows the split keeps together.
    """
    config = CheckConfig(
        label=record.column(ColumnRole.label),
        id_column=record.column(ColumnRole.identifier),
        time_column=record.column(ColumnRole.time),
        exclude_columns=tuple(record.columns_with(ColumnRole.excluded)),
    )
    return prepare_scan(frame, frame.head(1), config=config).train.rows
