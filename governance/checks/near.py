"""Near-duplicates: test rows close to, but not identical with, a train row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import HashedFrame, ScanContext
from governance.checks.registry import detector, make_finding, share
from governance.checks.similarity import isin


@dataclass(frozen=True, eq=False)
class NearMatch:
    """Rows of one frame near train rows, by one method (numeric or text)."""

    columns: tuple[str, ...]  # the columns compared within tolerance
    rows: np.ndarray  # positions in the frame
    train_rows: np.ndarray  # the nearest train row of each
    how: str  # the tolerance, in words, for a finding's detail


def near_rows(ctx: ScanContext, frame: HashedFrame) -> list[NearMatch]:
    """Rows of ``frame`` near, but not identical with, a train row; one entry per method.

    Rows whose features equal a train row's are left out: they are exact
    duplicates (or conflicting labels), reported as such.
    """
    identical = isin(frame.features, train_features(ctx, frame))
    found = []
    # The text search first: its working memory is freed before the numeric
    # index, which the scan keeps to the end, is built (a lower peak).
    text = ctx.text_near
    numeric = ctx.numeric_near
    has = set(frame.feature_columns)
    if numeric is not None and has.issuperset(numeric.space.columns + numeric.space.exact_columns):
        rows, train_rows = numeric.match(frame)
        keep = ~identical[rows]
        if keep.any():
            how = (
                f"within distance {numeric.index.tolerance:.3g} of a train row in"
                f" train-standardised {_names(numeric.space.columns)} (categories equal),"
                " far closer than train rows ordinarily are to each other"
            )
            found.append(NearMatch(numeric.space.columns, rows[keep], train_rows[keep], how))
    if text is not None and has.issuperset(text.columns):
        rows, train_rows, similarity = text.match(frame)
        keep = ~identical[rows]
        if keep.any():
            how = (
                f"with the words of {_names(text.columns)} overlapping a train row's by"
                f" Jaccard >= {ctx.config.text_jaccard:.2f} (median"
                f" {float(np.median(similarity[keep])):.2f})"
            )
            found.append(NearMatch(text.columns, rows[keep], train_rows[keep], how))
    return found


@detector(FindingType.near_duplicate)
def near_duplicates(ctx: ScanContext) -> list[Finding]:
    findings = []
    for near in near_rows(ctx, ctx.test):
        critical = len(near.rows) / len(ctx.test) > ctx.config.near_duplicate_critical_fraction
        findings.append(
            make_finding(
                ctx,
                FindingType.near_duplicate,
                Severity.critical if critical else Severity.warning,
                count=len(near.rows),
                columns=near.columns,
                train_rows=near.train_rows,
                test_rows=near.rows,
                detail=(
                    f"{share(len(near.rows), len(ctx.test))} test rows are near-copies of train"
                    f" rows, {near.how}; they inflate test scores as duplicates do."
                ),
            )
        )
    return findings


def train_features(ctx: ScanContext, frame: HashedFrame) -> np.ndarray:
    """Train's feature hashes over the features ``frame`` has (a reference may lack some)."""
    missing = [c for c in ctx.train.feature_columns if c not in frame.feature_columns]
    return ctx.train.hashes_without(missing, ctx.roles)[0]


def _names(columns: tuple[str, ...]) -> str:
    """Column names for a one-sentence detail; the finding's ``columns`` has them all."""
    if len(columns) <= 4:
        return ", ".join(columns)
    return f"{', '.join(columns[:3])} and {len(columns) - 3} more columns"
