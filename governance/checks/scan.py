"""Run every leakage and contamination check over a train/test pair and references."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

# Importing the detector modules registers them (see ``registry.detector``).
from governance.checks import contamination, duplicates, leakage, near, pii, proxy  # noqa: F401
from governance.checks.config import CheckConfig
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import ScanContext, alignment, prepare
from governance.checks.registry import DETECTORS
from governance.errors import InputError

__all__ = ["CheckConfig", "alignment", "prepare_scan", "run_detectors", "scan", "worst_first"]

_SEVERITY_ORDER = {severity: i for i, severity in enumerate(Severity)}
_TYPE_ORDER = {kind: i for i, kind in enumerate(FindingType)}


def scan(
    train: pd.DataFrame,
    test: pd.DataFrame,
    references: Mapping[str, pd.DataFrame] | None = None,
    *,
    config: CheckConfig | None = None,
) -> list[Finding]:
    """All findings for ``train`` vs ``test`` (and ``references`` vs train), worst first.

    Raises ``InputError`` naming the frame and column when the inputs do not
    fit the config (a declared column missing, train and test columns differing...).
    """
    return run_detectors(prepare_scan(train, test, references, config=config))


def prepare_scan(
    train: pd.DataFrame,
    test: pd.DataFrame,
    references: Mapping[str, pd.DataFrame] | None = None,
    *,
    config: CheckConfig | None = None,
) -> ScanContext:
    """Validate the inputs and hash them once for every detector."""
    config = config or CheckConfig()
    references = dict(references or {})
    problems = _problems(train, test, references, config)
    if problems:
        raise InputError("; ".join(problems))
    return prepare(train, test, references, config)


def run_detectors(ctx: ScanContext) -> list[Finding]:
    return worst_first(finding for kind in FindingType for finding in DETECTORS[kind](ctx))


def worst_first(findings: Iterable[Finding]) -> list[Finding]:
    """Findings in report order: by severity, then SPEC's type order, reference and columns.

    The sort is stable, so findings that tie keep the order their detector gave them.
    """
    return sorted(
        findings,
        key=lambda f: (
            _SEVERITY_ORDER[f.severity],
            _TYPE_ORDER[f.type],
            f.reference or "",
            f.columns,
        ),
    )


def _is_number_column(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _type_mismatches(frames: Mapping[str, pd.DataFrame]) -> list[str]:
    """A column of numbers in one frame with text in another: almost always a typo in the data.

    Compared as they are, the text would never match a number, and every
    duplicate or leak through that column would go unreported.
    """
    problems = []
    names = list(frames)
    for column in frames[names[0]].columns:
        numeric = [
            n
            for n in names
            if isinstance(frames[n].get(column), pd.Series) and _is_number_column(frames[n][column])
        ]
        if not numeric:
            continue
        for name in names:
            series = frames[name].get(column)
            if not isinstance(series, pd.Series) or name in numeric:
                continue  # absent, or a duplicated name (reported above)
            text = (series.notna() & pd.to_numeric(series, errors="coerce").isna()).to_numpy()
            if text.any():
                problems.append(
                    f"column {column!r} holds numbers in {numeric[0]} but non-numeric values "
                    f"in {name} ({int(text.sum())} rows, first at row {int(text.argmax())})"
                )
    return problems


def _problems(
    train: pd.DataFrame,
    test: pd.DataFrame,
    references: Mapping[str, pd.DataFrame],
    config: CheckConfig,
) -> list[str]:
    """Every reason the inputs cannot be scanned, each naming the frame and column."""
    frames = {
        "train": train,
        "test": test,
        **{f"reference {n!r}": f for n, f in references.items()},
    }
    problems = []
    for where, frame in frames.items():
        if not len(frame):
            problems.append(f"{where} has no rows")
        repeated = frame.columns[frame.columns.duplicated()]
        if len(repeated):
            problems.append(f"{where} has duplicate column {repeated[0]!r}")
        unnamed = [c for c in frame.columns if not isinstance(c, str)]
        if unnamed:
            problems.append(f"{where} has a column not named by a string: {unnamed[0]!r}")
    problems += _type_mismatches(frames)
    problems += config.missing_columns({"train": train.columns})
    # Test must carry the roles the split-comparing checks need; features it
    # lacks are not compared (see ``alignment``).
    problems += [
        f"{field} {column!r} is not a column of test"
        for field, column in (
            ("label", config.label),
            ("id_column", config.id_column),
            ("time_column", config.time_column),
        )
        if column is not None and column not in test.columns
    ]
    features = [c for c in config.features(train.columns) if c in test.columns]
    if not config.features(train.columns):
        problems.append("no feature columns left to compare (all have a role or are excluded)")
    elif not features:
        problems.append("train and test share no feature column to compare")
    for name, frame in references.items():
        if not isinstance(name, str) or not name:
            problems.append(f"reference name {name!r} must be a non-empty string")
        if features and not [c for c in features if c in frame.columns]:
            problems.append(f"reference {name!r} shares no feature column with train and test")
    return problems
