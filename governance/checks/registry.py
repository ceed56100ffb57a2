"""The detector registry: one function per finding type, filled by a decorator."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.frames import ScanContext

Detector = Callable[[ScanContext], list[Finding]]
D = TypeVar("D", bound=Callable[..., list[Finding]])

DETECTORS: dict[FindingType, Detector] = {}


def registrar(table: dict[FindingType, D]) -> Callable[[FindingType], Callable[[D], D]]:
    """A decorator factory that files each detector in ``table`` under its type (one per type)."""

    def detector(kind: FindingType) -> Callable[[D], D]:
        def register(fn: D) -> D:
            if kind in table:
                raise ValueError(f"two detectors for {kind}: {table[kind].__name__}, {fn.__name__}")
            table[kind] = fn
            return fn

        return register

    return detector


detector = registrar(DETECTORS)


def make_finding(
    ctx: ScanContext,
    kind: FindingType,
    severity: Severity,
    *,
    count: int,
    columns: Sequence[str],
    detail: str,
    train_rows: np.ndarray | None = None,
    test_rows: np.ndarray | None = None,
    reference_rows: np.ndarray | None = None,
    reference: str | None = None,
    rule: str | None = None,
    sensitive_columns: Sequence[str] = (),
) -> Finding:
    """A finding with its row lists sorted, de-duplicated and capped at ``max_rows_listed``."""
    cap = ctx.config.max_rows_listed
    lists = [
        np.unique(np.asarray(rows, dtype=np.int64)) if rows is not None else np.empty(0, np.int64)
        for rows in (train_rows, test_rows, reference_rows)
    ]
    return Finding(
        type=kind,
        severity=severity,
        count=count,
        columns=tuple(columns),
        train_rows=tuple(lists[0][:cap].tolist()),
        test_rows=tuple(lists[1][:cap].tolist()),
        reference_rows=tuple(lists[2][:cap].tolist()),
        reference=reference,
        rows_truncated=any(len(rows) > cap for rows in lists),
        rule=rule,
        sensitive_columns=tuple(sensitive_columns),
        detail=detail,
    )


def share(part: int, whole: int) -> str:
    """``part`` as a readable share of ``whole`` for finding details."""
    return f"{part:,} of {whole:,} ({part / whole:.2%})" if whole else f"{part:,}"
