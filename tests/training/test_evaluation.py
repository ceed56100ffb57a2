"""Metrics, calibration, slices and perturbations, cross-checked by hand and independently."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from training.errors import TrainingInputError
from training.evaluation import (
    BinaryMetrics,
    Perturbation,
    SliceSpec,
    binary_metrics,
    bucket_names,
    calibration,
    perturb,
    perturbed_columns,
    slice_labels,
    worst_slice,
)
from training.features import ColumnRole, FeatureSpec


def test_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0])
    probabilities = np.array([0.9, 0.6, 0.4, 0.3, 0.7])
    m = binary_metrics(labels, probabilities)
    # Predicted 1, 1, 0, 0, 1: TP 2, FN 1, TN 1, FP 1.
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # Positive-negative pairs ranked right: 0.9 > both, 0.6 > 0.3 only, 0.4 > 0.3 only.
    assert m.roc_auc == pytest.approx(4 / 6)
    expected_loss = -np.mean(np.log([0.9, 0.6, 0.4, 0.7, 0.3]))
    assert m.log_loss == pytest.approx(expected_loss)
    assert (m.rows, m.positive_rate) == (5, pytest.approx(0.6))


def test_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probabilities = np.round(rng.random(300), 2)
    positives, negatives = probabilities[labels == 1], probabilities[labels == 0]
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    ]
    assert binary_metrics(labels, probabilities).roc_auc == pytest.approx(np.mean(pairs))


def test_one_class_slice_has_no_auc() -> None:
    m = binary_metrics(np.array([1, 1]), np.array([0.8, 0.3]))
    assert m.roc_auc is None and m.balanced_accuracy is None and m.accuracy == 0.5


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(TrainingInputError, match="0 or 1"):
        binary_metrics(np.array([2, 0]), np.array([0.5, 0.5]))
    with pytest.raises(TrainingInputError, match="in \\[0, 1\\]"):
        binary_metrics(np.array([1, 0]), np.array([1.5, 0.5]))


def test_ece_by_hand() -> None:
    labels = np.array([0, 1, 1, 1, 0])
    probabilities = np.array([0.1, 0.15, 0.8, 0.85, 1.0])
    result = calibration(labels, probabilities, bins=2)
    # Bin 0: mean 0.125, rate 1/2; bin 1 (1.0 included): mean 0.88333, rate 2/3.
    expected = 2 / 5 * abs(0.5 - 0.125) + 3 / 5 * abs(2 / 3 - (0.8 + 0.85 + 1.0) / 3)
    assert result.ece == pytest.approx(expected)
    assert [(b.bin, b.count) for b in result.table] == [(0, 2), (1, 3)]
    assert result.table[1].confidence == pytest.approx(2.65 / 3)
    assert result.table[1].accuracy == pytest.approx(2 / 3)


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    probabilities = np.array([0.25] * 4 + [0.75] * 4)
    assert calibration(labels, probabilities, bins=4).ece == pytest.approx(0.0)


def test_slices_by_bucket_category_and_missing() -> None:
    assert bucket_names([18, 35, 50]) == ["<18", "[18,35)", "[35,50)", ">=50"]
    ages = pd.Series([3.0, 18.0, 34.9, 50.0, np.nan])
    spec = SliceSpec("xage", edges=(18, 35, 50))
    assert slice_labels(ages, spec).tolist() == ["<18", "[18,35)", "[18,35)", ">=50", "missing"]
    sex = pd.Series([0, 1, 1.0])
    assert slice_labels(sex, SliceSpec("female", categories=(0, 1))).tolist() == ["0", "1", "1"]
    with pytest.raises(TrainingInputError, match="outside the declared categories"):
        slice_labels(pd.Series([2]), SliceSpec("female", categories=(0, 1)))
    with pytest.raises(TrainingInputError, match="increasing"):
        SliceSpec("xage", edges=(35, 18))


def _metrics(rows: int, accuracy: float) -> BinaryMetrics:
    return BinaryMetrics(rows, 0.5, accuracy, accuracy, None, accuracy, 0.5)


def test_worst_slice_ignores_tiny_slices_and_reports_the_largest_gap() -> None:
    slices = {
        "sex": {"0": _metrics(100, 0.80), "1": _metrics(100, 0.78)},
        "age": {"<18": _metrics(100, 0.70), ">=18": _metrics(200, 0.90), "x": _metrics(3, 0.1)},
    }
    worst = worst_slice(slices, min_rows=30)
    assert worst is not None
    assert (worst.attribute, worst.slice, worst.accuracy) == ("age", "<18", 0.70)
    assert worst.gap == pytest.approx(0.20) and worst.gap_attribute == "age"
    assert worst.gaps["sex"] == pytest.approx(0.02)
    assert worst_slice(slices, min_rows=1000) is None


COLUMNS = [
    FeatureSpec("a", minimum=0.0, maximum=10.0),
    FeatureSpec("b", minimum=0.0, maximum=1.0, nullable=True),
    FeatureSpec("c", categories=("x", "y")),
    FeatureSpec("s", role=ColumnRole.SENSITIVE, minimum=0.0, maximum=1.0),
    FeatureSpec("label", role=ColumnRole.LABEL, categories=(0, 1)),
]


def test_perturbations_stay_within_the_schema() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.uniform(0, 10, 500),
            "b": rng.uniform(0, 1, 500),
            "c": ["x"] * 500,
            "s": [0.5] * 500,
            "label": [1] * 500,
        }
    )
    noisy = perturb(frame, COLUMNS, Perturbation.FEATURE_NOISE, 0.1, rng)
    assert noisy["a"].between(0, 10).all() and not noisy["a"].equals(frame["a"])
    # About 0.1 * range of noise on values far from the bounds.
    inner = frame["a"].between(3, 7)
    assert (noisy["a"] - frame["a"])[inner].std() == pytest.approx(1.0, rel=0.2)
    assert noisy["c"].equals(frame["c"]) and noisy["s"].equals(frame["s"])
    blanked = perturb(frame, COLUMNS, Perturbation.MISSING, 0.5, rng)
    assert blanked["b"].isna().mean() == pytest.approx(0.5, abs=0.08)
    assert blanked["a"].notna().all()
    assert perturbed_columns(COLUMNS, Perturbation.FEATURE_NOISE) == ["a", "b"]
    assert perturbed_columns(COLUMNS, Perturbation.MISSING) == ["b"]
    assert frame["b"].notna().all()  # the input is not modified
