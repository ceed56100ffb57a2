"""A short rule that states how a few numeric columns give a binary label away.

Tried, on the sampled rows: a threshold on the sum of the columns (one column:
a plain threshold), and "every column > 0". A rule is stated only where it
agrees with the label on nearly every row; the scan's minimal column set (see
``predictive``) says which columns, the rule says how.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    text: str  # e.g. "binexp = (outpdol + drugdol > 0)"
    agree: int  # rows on which the rule gives the label
    rows: int


def find_rule(
    label: str,
    positive: str,
    y: np.ndarray,
    columns: Sequence[str],
    values: Mapping[str, np.ndarray],
    min_agreement: float,
) -> Rule | None:
    """The best-agreeing short rule for 0/1 ``y`` over numeric ``columns``, if good enough.

    ``positive`` is how the label's positive value is written (``1`` for a 0/1 label).
    """
    if not columns or any(np.isnan(values[c]).any() for c in columns):
        return None  # a rule over missing values would need a convention to state
    matrix = np.column_stack([values[c] for c in columns])
    candidates = [_sum_threshold(y, matrix, columns), _all_positive(y, matrix, columns)]
    agree, expression = max(candidates, key=lambda found: found[0])
    if agree < min_agreement * len(y):
        return None
    head = f"{label} = " if positive == "1" else f"{label} is {positive} exactly when "
    return Rule(f"{head}({expression})", agree, len(y))


def _sum_threshold(y: np.ndarray, matrix: np.ndarray, columns: Sequence[str]) -> tuple[int, str]:
    """The threshold t (and direction) for which ``sum > t`` agrees with ``y`` on most rows."""
    total = matrix.sum(axis=1)
    order = np.argsort(total, kind="stable")
    ordered, labels = total[order], y[order]
    # Cutting after position i predicts 0 for rows [0, i] and 1 above: agreement
    # is (zeros up to i) + (ones above i); only cuts between distinct sums count.
    zeros_before = np.cumsum(labels == 0)
    ones_after = labels.sum() - np.cumsum(labels)
    cuts = np.flatnonzero(np.diff(ordered) > 0)
    if not len(cuts):
        return 0, ""
    upward = zeros_before[cuts] + ones_after[cuts]
    downward = len(y) - upward
    best_up, best_down = int(upward.argmax()), int(downward.argmax())
    up = upward[best_up] >= downward[best_down]
    cut = cuts[best_up] if up else cuts[best_down]
    threshold = ordered[cut]
    nonnegative = bool((matrix >= 0).all())
    # State the threshold as a round number where one lies between the sums it separates.
    shown = 0.0 if nonnegative and threshold == 0 else threshold
    expression = f"{' + '.join(columns)} {'>' if up else '<='} {shown:g}"
    return int(upward[best_up] if up else downward[best_down]), expression


def _all_positive(y: np.ndarray, matrix: np.ndarray, columns: Sequence[str]) -> tuple[int, str]:
    if len(columns) < 2:
        return 0, ""
    agree = int(((matrix > 0).all(axis=1) == (y == 1)).sum())
    return agree, f"each of {', '.join(columns)} > 0"
