"""Exact duplicates across and within splits, and identical features with different labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from governance.checks import details
from governance.checks.config import CheckConfig
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import HashedFrame, ScanContext
from governance.checks.registry import detector, make_finding
from governance.checks.similarity import isin


def compared_columns(ctx: ScanContext) -> list[str]:
    label = [ctx.roles.label] if ctx.roles.label is not None else []
    return [*ctx.roles.features, *label]


def repeat_chance(hashes: np.ndarray) -> float:
    """Good-Turing estimate of how often an independent new row equals one of ``hashes``.

    It is the share of rows whose value occurs more than once: near 0 for
    continuous data, near 1 when a few binary features admit few distinct rows.
    """
    return float(pd.Series(hashes).duplicated(keep=False).mean()) if len(hashes) else 0.0


def overlap_severity(rate: float, chance: float, config: CheckConfig) -> tuple[Severity, str]:
    """Critical unless the overlap is within what chance alone explains (see CheckConfig)."""
    factor = config.exact_duplicate_chance_factor
    if chance < config.exact_duplicate_chance_floor or rate > factor * chance:
        return Severity.critical, ""
    return Severity.warning, (
        f", no more than {factor:g}x the {chance:.1%} expected of an independent sample"
        " given how often train rows repeat each other (few distinct rows),"
    )


@detector(FindingType.exact_duplicate)
def exact_duplicates(ctx: ScanContext) -> list[Finding]:
    train, test = ctx.train.rows, ctx.test.rows
    in_train = isin(test, train)
    count = int(in_train.sum())
    if not count:
        return []
    rate = count / len(test)
    severity, chance_note = overlap_severity(rate, repeat_chance(train), ctx.config)
    return [
        make_finding(
            ctx,
            FindingType.exact_duplicate,
            severity,
            count=count,
            columns=compared_columns(ctx),
            train_rows=np.flatnonzero(isin(train, test[in_train])),
            test_rows=np.flatnonzero(in_train),
            detail=details.exact_duplicate(count, len(test), chance_note),
        )
    ]


@detector(FindingType.duplicate_rows)
def duplicate_rows(ctx: ScanContext) -> list[Finding]:
    findings = []
    for split, side in ((ctx.train, "train_rows"), (ctx.test, "test_rows")):
        repeats = np.flatnonzero(pd.Series(split.rows).duplicated(keep="first").to_numpy())
        if not len(repeats):
            continue
        findings.append(
            make_finding(
                ctx,
                FindingType.duplicate_rows,
                Severity.warning,
                count=len(repeats),
                columns=compared_columns(ctx),
                detail=details.duplicate_rows(len(repeats), len(split), split.name),
                **{side: repeats},
            )
        )
    return findings


@dataclass(frozen=True)
class _Labelling:
    """Which feature values a split labels, and which it labels more than one way."""

    labelled: np.ndarray  # rows with a label
    rows: np.ndarray  # distinct (features, label) hashes of labelled rows
    features: np.ndarray  # distinct feature hashes of labelled rows
    ambiguous: np.ndarray  # feature hashes seen with two or more labels

    @classmethod
    def of(cls, split: HashedFrame, label: str) -> _Labelling:
        labelled = split.frame[label].notna().to_numpy()
        rows = pd.Series(split.rows[labelled])
        first = ~rows.duplicated().to_numpy()
        features = pd.Series(split.features[labelled][first])
        return cls(
            labelled=labelled,
            rows=rows.to_numpy()[first],
            features=features.unique(),
            ambiguous=features[features.duplicated()].unique(),
        )

    def conflicts(self, split: HashedFrame, labelling: _Labelling) -> np.ndarray:
        """Mask of the rows of ``split`` (with ``labelling``) that this split labels otherwise."""
        other = isin(split.features, self.ambiguous) | (
            isin(split.features, self.features) & ~isin(split.rows, self.rows)
        )
        return other & labelling.labelled


@detector(FindingType.conflicting_labels)
def conflicting_labels(ctx: ScanContext) -> list[Finding]:
    label = ctx.roles.label
    if label is None:
        return []
    columns = [*ctx.roles.features, label]
    labelling = {split.name: _Labelling.of(split, label) for split in (ctx.train, ctx.test)}
    findings = []
    for split, side in ((ctx.train, "train_rows"), (ctx.test, "test_rows")):
        own = labelling[split.name]
        rows = np.flatnonzero(isin(split.features, own.ambiguous) & own.labelled)
        if len(rows):
            findings.append(
                make_finding(
                    ctx,
                    FindingType.conflicting_labels,
                    Severity.warning,
                    count=len(rows),
                    columns=columns,
                    detail=details.conflicting_labels_within(len(rows), len(split), split.name),
                    **{side: rows},
                )
            )
    train, test = labelling["train"], labelling["test"]
    test_rows = np.flatnonzero(train.conflicts(ctx.test, test))
    if len(test_rows):
        findings.append(
            make_finding(
                ctx,
                FindingType.conflicting_labels,
                Severity.warning,
                count=len(test_rows),
                columns=columns,
                train_rows=np.flatnonzero(test.conflicts(ctx.train, train)),
                test_rows=test_rows,
                detail=details.conflicting_labels_across(len(test_rows), len(ctx.test)),
            )
        )
    return findings
