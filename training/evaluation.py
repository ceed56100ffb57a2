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

Groups and fairness
    Each slice also gets its base rate (share of class 1), the rate the model predicts class 1,
    the true- and false-positive rates, and Wilson score intervals (``statsmodels``) on its
    accuracy, TPR and FPR; a slice under ``min_rows`` rows is marked ``small``. Its
    ``baseline_accuracy`` is what the best constant prediction scores on the same rows (its
    majority class): a slice whose accuracy is below it is served worse than by a constant.
    Per attribute, over the slices that are not small: the accuracy gap, the TPR and FPR gaps
    and their maximum (the equalised-odds gap), and the data's own gap, the spread of the
    baseline accuracy over the same slices, which no model is to blame for.
    Two sensitive attributes together form intersectional slices ``a & b``.

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
    "AttributeGaps",
    "BinaryMetrics",
    "GroupMetrics",
    "Calibration",
    "CalibrationBin",
    "Perturbation",
    "SliceSpec",
    "WorstSlice",
    "binary_metrics",
    "attribute_gaps",
    "baseline_metrics",
    "calibration",
    "group_metrics",
    "intersection_labels",
    "perturb",
    "sensitive_values",
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


def baseline_metrics(labels: np.ndarray) -> BinaryMetrics:
    """The metrics of the best constant predictor of ``labels``: its base rate for every row.

    It predicts the majority class (accuracy ``max(p, 1 - p)``), ranks nothing (ROC AUC 0.5)
    and its log loss is the labels' entropy: what a model has to beat to be worth anything.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise TrainingInputError("labels must be a non-empty 1-d array")
    rate = float(np.mean(labels == 1))
    return binary_metrics(labels, np.full(len(labels), rate))


Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """A slice's metrics with its base rate, error rates, baseline and confidence intervals."""

    metrics: BinaryMetrics
    predicted_positive_rate: float
    tpr: float | None  # None where the slice has no positive row
    fpr: float | None  # None where the slice has no negative row
    baseline_accuracy: float
    accuracy_ci: Interval
    tpr_ci: Interval | None
    fpr_ci: Interval | None
    confidence: float
    small: bool

    @property
    def below_baseline(self) -> bool:
        return self.metrics.accuracy < self.baseline_accuracy

    def to_json(self) -> dict[str, Any]:
        """The slice's keys in metrics.json: BinaryMetrics' plus the group's."""
        return {
            **self.metrics.to_json(),
            "base_rate": self.metrics.positive_rate,
            "predicted_positive_rate": self.predicted_positive_rate,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "baseline_accuracy": self.baseline_accuracy,
            "lift_over_baseline": self.metrics.accuracy - self.baseline_accuracy,
            "below_baseline": self.below_baseline,
            "accuracy_ci": list(self.accuracy_ci),
            "tpr_ci": list(self.tpr_ci) if self.tpr_ci is not None else None,
            "fpr_ci": list(self.fpr_ci) if self.fpr_ci is not None else None,
            "ci_confidence": self.confidence,
            "small": self.small,
        }


def wilson_interval(successes: int, trials: int, confidence: float) -> Interval:
    """The Wilson score interval of a proportion (statsmodels' ``proportion_confint``)."""
    from statsmodels.stats.proportion import proportion_confint

    if trials <= 0 or not 0 <= successes <= trials:
        raise TrainingInputError(
            f"an interval needs 0 <= successes <= trials > 0, got {successes} of {trials}"
        )
    if not 0 < confidence < 1:
        raise TrainingInputError(f"confidence must be in (0, 1), got {confidence!r}")
    lower, upper = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return (max(0.0, float(lower)), min(1.0, float(upper)))


def group_metrics(
    labels: np.ndarray, probabilities: np.ndarray, *, min_rows: int, confidence: float
) -> GroupMetrics:
    """:func:`binary_metrics` of one slice, with everything a fairness review compares."""
    labels, probabilities = _checked(labels, probabilities)
    predicted = probabilities >= 0.5
    positives, negatives = labels == 1, labels == 0
    correct = int((predicted == positives).sum())
    true_positives = int((predicted & positives).sum())
    false_positives = int((predicted & negatives).sum())
    n_pos, n_neg = int(positives.sum()), int(negatives.sum())
    return GroupMetrics(
        metrics=binary_metrics(labels, probabilities),
        predicted_positive_rate=float(predicted.mean()),
        tpr=true_positives / n_pos if n_pos else None,
        fpr=false_positives / n_neg if n_neg else None,
        baseline_accuracy=max(n_pos, n_neg) / len(labels),
        accuracy_ci=wilson_interval(correct, len(labels), confidence),
        tpr_ci=wilson_interval(true_positives, n_pos, confidence) if n_pos else None,
        fpr_ci=wilson_interval(false_positives, n_neg, confidence) if n_neg else None,
        confidence=confidence,
        small=len(labels) < min_rows,
    )


@dataclass(frozen=True, slots=True)
class AttributeGaps:
    """Best-minus-worst gaps over one attribute's slices that are not small; None if undefined."""

    attribute: str
    slices: tuple[str, ...]
    accuracy_gap: float
    data_gap: float  # the same spread of the slices' baseline (majority-class) accuracy
    base_rate_gap: float
    tpr_gap: float | None
    fpr_gap: float | None

    @property
    def equalized_odds_gap(self) -> float | None:
        known = [gap for gap in (self.tpr_gap, self.fpr_gap) if gap is not None]
        return max(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "slices": list(self.slices),
            "accuracy_gap": self.accuracy_gap,
            "data_gap": self.data_gap,
            "gap_over_data": self.accuracy_gap - self.data_gap,
            "base_rate_gap": self.base_rate_gap,
            "tpr_gap": self.tpr_gap,
            "fpr_gap": self.fpr_gap,
            "equalized_odds_gap": self.equalized_odds_gap,
        }


def attribute_gaps(attribute: str, by_slice: Mapping[str, GroupMetrics]) -> AttributeGaps | None:
    """The gaps among ``by_slice``'s slices that are not small; None with fewer than two."""
    counted = {name: m for name, m in by_slice.items() if not m.small}
    if len(counted) < 2:
        return None

    def spread(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) - min(known) if len(known) >= 2 else None

    groups = list(counted.values())
    accuracy = spread([m.metrics.accuracy for m in groups])
    data = spread([m.baseline_accuracy for m in groups])
    base_rate = spread([m.metrics.positive_rate for m in groups])
    assert accuracy is not None and data is not None and base_rate is not None  # >= 2 groups
    return AttributeGaps(
        attribute=attribute,
        slices=tuple(sorted(counted, key=str)),
        accuracy_gap=accuracy,
        data_gap=data,
        base_rate_gap=base_rate,
        tpr_gap=spread([m.tpr for m in groups]),
        fpr_gap=spread([m.fpr for m in groups]),
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


def intersection_labels(first: pd.Series, second: pd.Series) -> pd.Series:
    """``a & b``: each row's intersectional slice from its slices of two attributes."""
    return first.astype(str) + " & " + second.astype(str)


def sensitive_values(values: pd.Series, spec: SliceSpec) -> dict[str, Any]:
    """How a sensitive column's values fall: missing, and fractional where it is an indicator.

    A bucketed column whose values all lie in [0, 1] is a group indicator; its values
    between 0 and 1 (RAND HIE's ``black``) are imputed shares, not memberships, and the
    page says how many rows a bucket edge assigned. Other numeric columns (age, income)
    are continuous: their fractions mean nothing.
    """
    present = values.dropna()
    result: dict[str, Any] = {"rows": len(values), "missing": int(len(values) - len(present))}
    if spec.edges is None:
        return result | {"bucketed": False}
    numbers = pd.to_numeric(present, errors="raise").to_numpy(dtype=np.float64)
    indicator = bool(len(numbers)) and bool(numbers.min() >= 0 and numbers.max() <= 1)
    result |= {"bucketed": True, "edges": list(spec.edges), "indicator": indicator}
    if not indicator:
        return result
    fractional = (numbers > 0) & (numbers < 1)
    names = bucket_names(spec.edges)
    assigned = np.searchsorted(spec.edges, numbers[fractional], side="right")
    return result | {
        "fractional": int(fractional.sum()),
        "fractional_to": {
            names[i]: int((assigned == i).sum()) for i in sorted(set(assigned.tolist()))
        },
    }


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
