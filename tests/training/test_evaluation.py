"""Metrics, calibration, slices and perturbations, cross-checked by hand and independently."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from training.errors import TrainingInputError
from training.evaluation import (
    BinaryMetrics,
    GroupMetrics,
    Perturbation,
    SliceSpec,
    attribute_gaps,
    baseline_metrics,
    binary_metrics,
    bucket_names,
    calibration,
    group_metrics,
    intersection_labels,
    perturb,
    perturbed_columns,
    sensitive_values,
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


# --------------------------------------------------------------------------- baseline, groups


def test_baseline_is_the_best_constant_predictor() -> None:
    labels = np.array([1] * 7 + [0] * 3)
    b = baseline_metrics(labels)
    assert b.accuracy == pytest.approx(0.7)  # always "1"
    assert b.roc_auc == pytest.approx(0.5) and b.balanced_accuracy == pytest.approx(0.5)
    # Its log loss is the labels' entropy; F1 of always-1 is 2p / (1 + p).
    assert b.log_loss == pytest.approx(-(0.7 * np.log(0.7) + 0.3 * np.log(0.3)))
    assert b.f1 == pytest.approx(2 * 0.7 / 1.7)
    assert baseline_metrics(np.array([0, 0, 1])).accuracy == pytest.approx(2 / 3)


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_group_rates_and_wilson_intervals_by_hand() -> None:
    # 4 positives (3 predicted 1), 6 negatives (2 predicted 1): TPR 3/4, FPR 2/6.
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.55, 0.1, 0.2, 0.3, 0.4])
    g = group_metrics(labels, probabilities, min_rows=30, confidence=0.95)
    assert (g.tpr, g.fpr) == (pytest.approx(0.75), pytest.approx(2 / 6))
    assert g.metrics.accuracy == pytest.approx(0.7) and g.baseline_accuracy == pytest.approx(0.6)
    assert g.predicted_positive_rate == pytest.approx(0.5) and g.small
    assert g.accuracy_ci == pytest.approx(_wilson_by_hand(7, 10))
    assert g.tpr_ci == pytest.approx(_wilson_by_hand(3, 4))
    assert g.fpr_ci == pytest.approx(_wilson_by_hand(2, 6))
    row = g.to_json()
    assert row["base_rate"] == pytest.approx(0.4) and row["below_baseline"] is False
    assert row["lift_over_baseline"] == pytest.approx(0.1)
    # All one class: the other rate is undefined, never a made-up number.
    only = group_metrics(np.array([1, 1]), np.array([0.2, 0.9]), min_rows=1, confidence=0.9)
    assert only.fpr is None and only.fpr_ci is None and not only.small
    assert only.below_baseline  # accuracy 0.5 < 1.0 for always "1"


def test_attribute_gaps_leave_out_small_slices_and_compare_with_the_data() -> None:
    def group(labels: list[int], predicted: list[int], min_rows: int = 2) -> GroupMetrics:
        return group_metrics(
            np.array(labels), np.array(predicted, dtype=float), min_rows=min_rows, confidence=0.95
        )

    by_slice = {
        # base rate 0.5, accuracy 1.0, TPR 1, FPR 0
        "a": group([1, 1, 0, 0], [1, 1, 0, 0]),
        # base rate 0.75 (baseline 0.75), accuracy 0.5, TPR 2/3, FPR 1
        "b": group([1, 1, 1, 0], [1, 1, 0, 1]),
        "tiny": group([0], [1]),  # under min_rows: not compared
    }
    gaps = attribute_gaps("x", by_slice)
    assert gaps is not None and gaps.slices == ("a", "b")
    assert gaps.accuracy_gap == pytest.approx(0.5) and gaps.data_gap == pytest.approx(0.25)
    assert gaps.base_rate_gap == pytest.approx(0.25)
    assert gaps.tpr_gap == pytest.approx(1 / 3) and gaps.fpr_gap == pytest.approx(1.0)
    assert gaps.equalized_odds_gap == pytest.approx(1.0)
    assert gaps.to_json()["gap_over_data"] == pytest.approx(0.25)
    assert attribute_gaps("x", {"a": by_slice["a"], "tiny": by_slice["tiny"]}) is None


def test_fractional_sensitive_values_are_counted_not_hidden() -> None:
    values = pd.Series([0.0, 1.0, 0.25, 0.75, 0.5, None, 1.0])
    report = sensitive_values(values, SliceSpec("black", edges=(0.5,)))
    assert report["missing"] == 1 and report["fractional"] == 3
    assert report["fractional_to"] == {"<0.5": 1, ">=0.5": 2}
    assert report["indicator"] is True
    categorical = sensitive_values(pd.Series([0, 1, None]), SliceSpec("f", categories=(0, 1)))
    assert categorical == {"rows": 3, "missing": 1, "bucketed": False}
    # Age in years is continuous, not a 0/1 indicator: its fractions are not imputations.
    age = sensitive_values(pd.Series([25.5, 61.2, 3.0]), SliceSpec("xage", edges=(18, 35)))
    assert age["indicator"] is False and "fractional" not in age


def test_intersection_labels_join_both_slices() -> None:
    first = pd.Series(["0", "1", "missing"])
    second = pd.Series(["<18", ">=50", "<18"])
    assert list(intersection_labels(first, second)) == ["0 & <18", "1 & >=50", "missing & <18"]
