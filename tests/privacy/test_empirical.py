"""The one-run audit bound and membership-inference metrics, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from privacy.empirical import (
    AuditBoundExceeded,
    audit_one_run,
    check_bound_below,
    guesses_from_scores,
    membership_inference,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from privacy.errors import PrivacyInputError


def brute_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Theorem 3.1 of Steinke, Nasr and Jagielski (2023), summed term by term in floats."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = max((sum(pmf[v - i : v]) / i for i in range(1, v + 1)), default=0.0)
    return min(beta + 2 * m * delta * alpha, 1.0)


def clopper_pearson_epsilon(r: int, v: int, confidence: float) -> float:
    """With delta = 0 the bound is the logit of the one-sided Clopper-Pearson lower limit."""
    q = stats.beta.ppf(1 - confidence, v, r - v + 1)
    return math.log(q / (1 - q))


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [
        (1000, 200, 150, 1.0, 0.0),
        (1000, 200, 150, 1.0, 1e-5),
        (1000, 100, 90, 2.5, 1e-6),
        (500, 60, 31, 0.1, 1e-3),
        (1000, 200, 0, 0.5, 1e-5),
    ],
)
def test_p_value_matches_the_theorem_term_by_term(
    m: int, r: int, v: int, eps: float, delta: float
) -> None:
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(
        brute_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15
    )


@pytest.mark.parametrize(("r", "v"), [(200, 150), (200, 120), (100, 100), (1000, 600)])
def test_bound_without_delta_is_the_clopper_pearson_logit(r: int, v: int) -> None:
    bound = one_run_epsilon_lower_bound(1000, r, v, 0.0, 0.95)
    assert bound == pytest.approx(clopper_pearson_epsilon(r, v, 0.95), abs=1e-5)


def test_all_guesses_right_has_a_closed_form() -> None:
    # P[W >= r] = q^r = 0.05 gives q = 0.05^(1/r).
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon_lower_bound(1000, 100, 100, 0.0, 0.95) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-5
    )
    assert math.log(q / (1 - q)) == pytest.approx(3.49297, abs=1e-5)


@pytest.mark.parametrize(("m", "r", "v", "delta"), [(1000, 200, 170, 1e-5), (1000, 200, 190, 1e-3)])
def test_bound_with_delta_is_the_largest_refuted_epsilon(
    m: int, r: int, v: int, delta: float
) -> None:
    bound = one_run_epsilon_lower_bound(m, r, v, delta, 0.95)
    assert (
        brute_p_value(m, r, v, bound, delta) < 0.05 <= brute_p_value(m, r, v, bound + 1e-4, delta)
    )
    # The delta term only weakens the bound.
    assert bound < one_run_epsilon_lower_bound(m, r, v, 0.0, 0.95)


def test_chance_level_guesses_refute_nothing() -> None:
    assert one_run_epsilon_lower_bound(1000, 200, 100, 1e-5, 0.95) == 0.0
    assert one_run_epsilon_lower_bound(1000, 200, 111, 1e-5, 0.95) == 0.0


def test_invalid_counts_are_refused() -> None:
    with pytest.raises(PrivacyInputError, match="correct <= guesses <= m"):
        one_run_p_value(100, 200, 10, 1.0, 0.0)
    with pytest.raises(PrivacyInputError, match="confidence"):
        one_run_epsilon_lower_bound(1000, 10, 5, 0.0, 1.0)


def test_guesses_take_the_top_and_bottom_scores() -> None:
    scores = np.array([0.5, 3.0, -1.0, 2.0, 0.0, -2.0])
    assert guesses_from_scores(scores, 2, 1).tolist() == [0, 1, 0, 1, 0, -1]
    assert guesses_from_scores(scores, 0, 2).tolist() == [0, 0, -1, 0, 0, -1]
    with pytest.raises(PrivacyInputError, match="exceed"):
        guesses_from_scores(scores, 4, 3)


def test_audit_counts_correct_guesses() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    perfect = audit_one_run(
        included + rng.normal(0, 0.01, 1000),
        included,
        positive=100,
        negative=100,
        delta=1e-5,
        confidence=0.95,
    )
    assert (perfect.guesses, perfect.correct, perfect.canaries) == (200, 200, 1000)
    assert perfect.epsilon_lower_bound > 3.0
    blind = audit_one_run(
        rng.normal(size=1000), included, positive=100, negative=100, delta=1e-5, confidence=0.95
    )
    assert blind.epsilon_lower_bound < 0.5


def test_a_bound_above_the_accountant_fails_loudly() -> None:
    check_bound_below(0.5, 3.0, "run")
    with pytest.raises(AuditBoundExceeded, match="exceeds the accountant's epsilon 3.0000"):
        check_bound_below(3.2, 3.0, "run")


def test_membership_inference_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    members = np.round(rng.normal(0.3, 1, 700), 1)  # rounded: ties must count half
    others = np.round(rng.normal(0, 1, 900), 1)
    result = membership_inference(members, others, fpr=0.01)
    labels = np.r_[np.ones(700), np.zeros(900)]
    scores = np.r_[members, others]
    assert result.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert result.tpr_at_fpr == pytest.approx(tpr[fpr <= 0.01].max(), abs=1e-12)
    assert (result.members, result.non_members) == (700, 900)
