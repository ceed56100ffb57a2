"""Utility, calibration, slice and robustness metrics of a binary classifier: pure functions.

Inputs are labels (0/1) and the predicted probability of class 1; the prediction is class 1
at probability >= 0.5. Metrics come from scikit-learn; what it leaves undefined on a
slice (ROC AUC with one class present) is reported as None, never as a made-up number.

Calibration
    Equal-width bins over the predicted probability of class 1 (the last bin includes 1.0).
    Each bin's ``confidence`` is its mean predicted probability and ``accuracy`` its
    observed rate of class 1; the expected calibration error is
    ``sum_b n_b / N * |accuracy_b - confidence_b|`` over non-empty bins.

Slices
    A sensitive attribute is sliced by its declared categories (one slice per value) or,
    when it is numeric, by bucket edges ``[e1, e2, ...]``: ``<e1``, ``[e1,e2)``, ...,
    ``>=ek``. Missing values form their own ``missing`` slice.

Robustness
    Perturbations act on the raw table before encoding, within what the schema declares:
    Gaussian noise of ``level`` times a numeric feature's declared range (then clipped to
    the range), or a share ``level`` of each nullable feature's values blanked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics

from training.errors import TrainingInputError
from training.features import FeatureSpec, input_columns

__all__ = [
    "BinaryMetrics",
    "Calibration",
    "CalibrationBin",
    "Perturbation",
    "SliceSpec",
    "WorstSlice",
    "binary_metrics",
    "calibration",
    "perturb",
    "slice_labels",
    "worst_slice",
]

MISSING_SLICE = "missing"
# Probabilities are clipped this far from 0 and 1 for the log loss, so one confident
# mistake costs a large but finite amount.
_LOG_LOSS_EPS = 1e-7


@dataclass(frozen=True, slots=True)
class BinaryMetrics:
    """Threshold metrics at 0.5 and ranking/probability metrics; None where undefined."""

    rows: int
    positive_rate: float
    accuracy: float
    balanced_accuracy: float | None
    roc_auc: float | None
    f1: float
    log_loss: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One bin of the reliability diagram."""

    bin: int
    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Expected calibration error over ``bins`` equal-width bins, and the non-empty bins."""

    ece: float
    bins: int
    table: tuple[CalibrationBin, ...]


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """How to slice one sensitive attribute: by ``categories`` or by numeric ``edges``."""

    column: str
    categories: tuple[object, ...] | None = None
    edges: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.categories is None) == (self.edges is None):
            raise TrainingInputError(
                f"slice {self.column!r}: give either categories or bucket edges, not both"
            )
        if self.edges is not None:
            edges = tuple(float(edge) for edge in self.edges)
            if (
                not edges
                or any(not math.isfinite(e) for e in edges)
                or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
            ):
                raise TrainingInputError(
                    f"slice {self.column!r}: bucket edges must be finite and increasing, "
                    f"got {list(self.edges)}"
                )
            object.__setattr__(self, "edges", edges)


@dataclass(frozen=True, slots=True)
class WorstSlice:
    """The slice with the lowest accuracy, and the largest best-minus-worst gap."""

    attribute: str
    slice: str
    accuracy: float
    gap: float
    gap_attribute: str
    gaps: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "attribute": self.attribute,
            "slice": self.slice,
            "accuracy": self.accuracy,
            "gap": self.gap,
            "gap_attribute": self.gap_attribute,
            "gaps": dict(self.gaps),
        }


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> BinaryMetrics:
    """The metrics of predicting class 1 with ``probabilities`` against 0/1 ``labels``."""
    labels, probabilities = _checked(labels, probabilities)
    predicted = (probabilities >= 0.5).astype(np.int64)
    both_classes = len(np.unique(labels)) == 2
    clipped = np.clip(probabilities, _LOG_LOSS_EPS, 1 - _LOG_LOSS_EPS)
    return BinaryMetrics(
        rows=len(labels),
        positive_rate=float(labels.mean()),
        accuracy=float(metrics.accuracy_score(labels, predicted)),
        balanced_accuracy=(
            float(metrics.balanced_accuracy_score(labels, predicted)) if both_classes else None
        ),
        roc_auc=float(metrics.roc_auc_score(labels, probabilities)) if both_classes else None,
        f1=float(metrics.f1_score(labels, predicted, zero_division=0.0)),
        log_loss=float(metrics.log_loss(labels, clipped, labels=[0, 1])),
    )


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int) -> Calibration:
    """Reliability diagram and expected calibration error over ``bins`` equal-width bins."""
    labels, probabilities = _checked(labels, probabilities)
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise TrainingInputError(f"calibration bins must be a positive integer, got {bins!r}")
    # Bin b holds [b/B, (b+1)/B); probability 1.0 goes to the last bin.
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count == 0:
            continue
        confidence = float(probabilities[members].mean())
        accuracy = float(labels[members].mean())
        ece += count / len(labels) * abs(accuracy - confidence)
        table.append(CalibrationBin(b, b / bins, (b + 1) / bins, count, confidence, accuracy))
    return Calibration(ece=float(ece), bins=bins, table=tuple(table))


def slice_labels(values: pd.Series, spec: SliceSpec) -> pd.Series:
    """Each row's slice label under ``spec`` (``missing`` for missing values)."""
    labels = pd.Series(MISSING_SLICE, index=values.index, dtype=object)
    present = values.notna()
    if spec.categories is not None:
        known = {_category_key(c): str(c) for c in spec.categories}
        mapped = values[present].map(lambda v: known.get(_category_key(v)))
        if mapped.isna().any():
            raise TrainingInputError(
                f"slice {spec.column!r}: {int(mapped.isna().sum())} values outside the "
                f"declared categories {list(spec.categories)}"
            )
        labels[present] = mapped
        return labels
    assert spec.edges is not None  # SliceSpec holds one or the other
    numbers = pd.to_numeric(values[present], errors="raise").to_numpy(dtype=np.float64)
    names = bucket_names(spec.edges)
    labels[present] = [names[i] for i in np.searchsorted(spec.edges, numbers, side="right")]
    return labels


def bucket_names(edges: Sequence[float]) -> list[str]:
    """``<e1``, ``[e1,e2)``, ..., ``>=ek``: the labels of the buckets edges make."""
    text = [f"{edge:g}" for edge in edges]
    middle = [f"[{a},{b})" for a, b in zip(text, text[1:], strict=False)]
    return [f"<{text[0]}", *middle, f">={text[-1]}"]


def worst_slice(
    slices: Mapping[str, Mapping[str, BinaryMetrics]], min_rows: int
) -> WorstSlice | None:
    """The least accurate slice and the largest accuracy gap, over slices of >= ``min_rows``.

    Slices smaller than ``min_rows`` are still reported per slice, but their accuracy is
    too noisy to name a worst slice; None when no attribute has two such slices.
    """
    worst: tuple[float, str, str] | None = None
    gaps: dict[str, float] = {}
    for attribute, by_slice in slices.items():
        counted = {name: m.accuracy for name, m in by_slice.items() if m.rows >= min_rows}
        if len(counted) < 2:
            continue
        gaps[attribute] = max(counted.values()) - min(counted.values())
        name = min(counted, key=lambda n: (counted[n], n))
        if worst is None or counted[name] < worst[0]:
            worst = (counted[name], attribute, name)
    if worst is None:
        return None
    gap_attribute = max(gaps, key=lambda a: (gaps[a], a))
    return WorstSlice(
        attribute=worst[1],
        slice=worst[2],
        accuracy=worst[0],
        gap=gaps[gap_attribute],
        gap_attribute=gap_attribute,
        gaps=MappingProxyType(gaps),
    )


class Perturbation(StrEnum):
    """Ways to corrupt the raw features for the robustness metrics."""

    FEATURE_NOISE = "feature_noise"
    MISSING = "missing"


def perturb(
    frame: pd.DataFrame,
    columns: Sequence[FeatureSpec],
    kind: Perturbation,
    level: float,
    rng: np.random.Generator,
    *,
    include_sensitive: bool = False,
) -> pd.DataFrame:
    """A copy of ``frame`` with the model's input columns perturbed by ``kind`` at ``level``."""
    if not (isinstance(level, int | float) and 0 <= level <= 1):
        raise TrainingInputError(f"{kind} level must be in [0, 1], got {level!r}")
    out = frame.copy()
    for spec in input_columns(columns, include_sensitive=include_sensitive):
        applies, apply = _PERTURBATIONS[Perturbation(kind)]
        if applies(spec):
            out[spec.name] = apply(out[spec.name], spec, level, rng)
    return out


def perturbed_columns(
    columns: Sequence[FeatureSpec], kind: Perturbation, *, include_sensitive: bool = False
) -> list[str]:
    """The input columns ``kind`` changes."""
    applies, _ = _PERTURBATIONS[Perturbation(kind)]
    return [
        spec.name
        for spec in input_columns(columns, include_sensitive=include_sensitive)
        if applies(spec)
    ]


def _is_numeric(spec: FeatureSpec) -> bool:
    return spec.categories is None


def _is_nullable(spec: FeatureSpec) -> bool:
    return spec.nullable


def _noisy(
    values: pd.Series, spec: FeatureSpec, level: float, rng: np.random.Generator
) -> pd.Series:
    assert spec.minimum is not None and spec.maximum is not None  # numeric input columns
    span = spec.maximum - spec.minimum
    numbers = values.astype("float64")
    noise = rng.normal(0.0, level * span, size=len(values))
    # Missing values stay missing: NaN plus noise is NaN.
    return (numbers + noise).clip(spec.minimum, spec.maximum)


def _blanked(
    values: pd.Series, spec: FeatureSpec, level: float, rng: np.random.Generator
) -> pd.Series:
    out = values.astype("float64") if spec.categories is None else values.astype(object)
    out[rng.random(len(values)) < level] = np.nan
    return out


_Apply = Callable[[pd.Series, FeatureSpec, float, np.random.Generator], pd.Series]
_PERTURBATIONS: Mapping[Perturbation, tuple[Callable[[FeatureSpec], bool], _Apply]] = (
    MappingProxyType(
        {
            Perturbation.FEATURE_NOISE: (_is_numeric, _noisy),
            Perturbation.MISSING: (_is_nullable, _blanked),
        }
    )
)


def _checked(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != probabilities.shape or len(labels) == 0:
        raise TrainingInputError(
            "labels and probabilities must be non-empty 1-d arrays of the same length"
        )
    if not np.isin(labels, (0, 1)).all():
        raise TrainingInputError("labels must be 0 or 1")
    finite = np.isfinite(probabilities).all()
    if not (finite and (probabilities >= 0).all() and (probabilities <= 1).all()):
        raise TrainingInputError("probabilities must be finite and in [0, 1]")
    return labels.astype(np.int64), probabilities


def _category_key(value: object) -> tuple[str, object]:
    # 1, 1.0 and True are one category when read as numbers (as training.features does).
    if isinstance(value, int | float | np.number | np.bool_):
        return ("number", float(value))
    return ("text", value)
