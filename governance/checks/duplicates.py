"""Exact duplicates across and within splits, and identical features with different labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from governance.checks import details
from governance.checks.config import CheckConfig
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import HashedFrame, ScanContext
from governance.checks.leakage import label_analysis
from governance.checks.registry import detector, make_finding
from governance.checks.similarity import isin

# Value frequencies are estimated from at most this many train rows per column.
_CHANCE_SAMPLE = 200_000


@dataclass(frozen=True)
class Compared:
    """The columns duplicates are judged on, and each split's hashes over them.

    Columns found to encode the label are left out: a copy of a row that
    differs only in a noisy label-encoding column is still a copy, and two
    rows that differ only in their label also differ in such a column, which
    would hide the conflict.
    """

    columns: tuple[str, ...]  # features (less the label encoders), then the label
    dropped: tuple[str, ...]
    features: dict[str, np.ndarray]  # split name -> feature hash per row
    rows: dict[str, np.ndarray]  # split name -> (features, label) hash per row

    def said(self, detail: str) -> str:
        """``detail`` with the columns left out named before its final full stop."""
        if not self.dropped:
            return detail
        left_out = f" (compared without {', '.join(self.dropped)}, found to encode the label)"
        return detail.removesuffix(".") + left_out + "."


def compared(ctx: ScanContext) -> Compared:
    """Computed once per scan (see ``Compared``)."""
    if "compared" not in ctx.derived:
        dropped = label_analysis(ctx).encoders
        hashes = {s.name: s.hashes_without(dropped, ctx.roles) for s in (ctx.train, ctx.test)}
        label = [ctx.roles.label] if ctx.roles.label is not None else []
        ctx.derived["compared"] = Compared(
            columns=(*(c for c in ctx.roles.features if c not in dropped), *label),
            dropped=dropped,
            features={name: h[0] for name, h in hashes.items()},
            rows={name: h[1] for name, h in hashes.items()},
        )
    return ctx.derived["compared"]  # type: ignore[return-value]


def compared_columns(ctx: ScanContext) -> list[str]:
    return list(compared(ctx).columns)


def collision_probability(cells: np.ndarray) -> float:
    """The chance that two rows drawn without replacement share a value (unbiased estimate)."""
    n = len(cells)
    if n < 2:
        return 1.0
    counts = pd.Series(cells).value_counts(sort=False).to_numpy().astype(np.float64)
    return float((counts * (counts - 1)).sum() / (n * (n - 1.0)))


def value_space_chance(collisions: Sequence[float], n_train: int) -> float:
    """How often an independent new row equals one of ``n_train`` train rows by chance.

    Each column's collision probability says how small its space of values
    is; a row matches a given train row with their product (columns taken as
    independent), and one of ``n_train`` rows with 1 - (1 - product)^n. The
    estimate comes from the values, not from rows that repeat, so repeats in
    train (a finding of their own) do not excuse copies in test, and copies in
    continuous data, where a chance match is impossible, stay critical.
    """
    if not collisions or min(collisions) <= 0.0:
        return 0.0
    log_match = float(np.sum(np.log(collisions)))
    per_row = float(np.exp(log_match))
    if per_row >= 1.0:
        return 1.0
    return float(-np.expm1(n_train * np.log1p(-per_row)))


def split_chance(ctx: ScanContext, columns: Sequence[str]) -> float:
    """``value_space_chance`` for rows of train's ``columns`` (sampled to bound the cost)."""
    n = len(ctx.train)
    rows = slice(None)
    if n > _CHANCE_SAMPLE:
        rng = np.random.default_rng(ctx.config.seed + 3)
        rows = np.sort(rng.choice(n, size=_CHANCE_SAMPLE, replace=False))
    return value_space_chance([collision_probability(ctx.train.cells[c][rows]) for c in columns], n)


def overlap_severity(rate: float, chance: float, config: CheckConfig) -> tuple[Severity, str]:
    """Critical unless the overlap is within what chance alone explains (see CheckConfig)."""
    factor = config.exact_duplicate_chance_factor
    if chance < config.exact_duplicate_chance_floor or rate > factor * chance:
        return Severity.critical, ""
    return Severity.warning, (
        f", no more than {factor:g}x the {chance:.1%} expected by chance"
        " given how few distinct values the columns take,"
    )


@detector(FindingType.exact_duplicate)
def exact_duplicates(ctx: ScanContext) -> list[Finding]:
    same = compared(ctx)
    train, test = same.rows["train"], same.rows["test"]
    in_train = isin(test, train)
    count = int(in_train.sum())
    if not count:
        return []
    rate = count / len(test)
    chance = split_chance(ctx, same.columns)
    severity, chance_note = overlap_severity(rate, chance, ctx.config)
    return [
        make_finding(
            ctx,
            FindingType.exact_duplicate,
            severity,
            count=count,
            columns=same.columns,
            train_rows=np.flatnonzero(isin(train, test[in_train])),
            test_rows=np.flatnonzero(in_train),
            detail=same.said(details.exact_duplicate(count, len(test), chance_note)),
        )
    ]


@detector(FindingType.duplicate_rows)
def duplicate_rows(ctx: ScanContext) -> list[Finding]:
    findings = []
    same = compared(ctx)
    for split, side in ((ctx.train, "train_rows"), (ctx.test, "test_rows")):
        hashes = same.rows[split.name]
        repeats = np.flatnonzero(pd.Series(hashes).duplicated(keep="first").to_numpy())
        if not len(repeats):
            continue
        findings.append(
            make_finding(
                ctx,
                FindingType.duplicate_rows,
                Severity.warning,
                count=len(repeats),
                columns=same.columns,
                detail=same.said(details.duplicate_rows(len(repeats), len(split), split.name)),
                **{side: repeats},
            )
        )
    return findings


@dataclass(frozen=True)
class _Labelling:
    """Which feature values a split labels, and which it labels more than one way."""

    labelled: np.ndarray  # rows with a label
    features_of_rows: np.ndarray  # feature hash per row
    rows_of_rows: np.ndarray  # (features, label) hash per row
    rows: np.ndarray  # distinct (features, label) hashes of labelled rows
    features: np.ndarray  # distinct feature hashes of labelled rows
    ambiguous: np.ndarray  # feature hashes seen with two or more labels

    @classmethod
    def of(cls, split: HashedFrame, label: str, same: Compared) -> _Labelling:
        labelled = split.frame[label].notna().to_numpy()
        all_features, all_rows = same.features[split.name], same.rows[split.name]
        rows = pd.Series(all_rows[labelled])
        first = ~rows.duplicated().to_numpy()
        features = pd.Series(all_features[labelled][first])
        return cls(
            labelled=labelled,
            features_of_rows=all_features,
            rows_of_rows=all_rows,
            rows=rows.to_numpy()[first],
            features=features.unique(),
            ambiguous=features[features.duplicated()].unique(),
        )

    def conflicts(self, other: _Labelling) -> np.ndarray:
        """Mask of the rows of the split ``other`` describes that this split labels otherwise."""
        found = isin(other.features_of_rows, self.ambiguous) | (
            isin(other.features_of_rows, self.features) & ~isin(other.rows_of_rows, self.rows)
        )
        return found & other.labelled


@detector(FindingType.conflicting_labels)
def conflicting_labels(ctx: ScanContext) -> list[Finding]:
    label = ctx.roles.label
    if label is None:
        return []
    same = compared(ctx)
    labelling = {s.name: _Labelling.of(s, label, same) for s in (ctx.train, ctx.test)}
    findings = []
    for split, side in ((ctx.train, "train_rows"), (ctx.test, "test_rows")):
        own = labelling[split.name]
        rows = np.flatnonzero(isin(own.features_of_rows, own.ambiguous) & own.labelled)
        if len(rows):
            findings.append(
                make_finding(
                    ctx,
                    FindingType.conflicting_labels,
                    Severity.warning,
                    count=len(rows),
                    columns=same.columns,
                    detail=same.said(
                        details.conflicting_labels_within(len(rows), len(split), split.name)
                    ),
                    **{side: rows},
                )
            )
    train, test = labelling["train"], labelling["test"]
    test_rows = np.flatnonzero(train.conflicts(test))
    if len(test_rows):
        findings.append(
            make_finding(
                ctx,
                FindingType.conflicting_labels,
                Severity.warning,
                count=len(test_rows),
                columns=same.columns,
                train_rows=np.flatnonzero(test.conflicts(train)),
                test_rows=test_rows,
                detail=same.said(details.conflicting_labels_across(len(test_rows), len(ctx.test))),
            )
        )
    return findings
