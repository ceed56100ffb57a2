"""Empirical privacy: a one-run canary audit and membership-inference metrics.

One-run audit (Steinke, Nasr and Jagielski 2023, "Privacy Auditing with One (1) Training
Run", arXiv:2305.08846)
    ``m`` canaries are each included in the training data independently with probability
    1/2 (``S_i = +1`` included, ``-1`` not). After one training run the auditor scores every
    canary, guesses ``+1`` for the ``k+`` highest scores and ``-1`` for the ``k-`` lowest,
    and abstains on the rest (``r = k+ + k-`` guesses). Let ``v`` be the number of correct
    guesses. If the training run is (eps, delta)-DP with respect to each canary, then
    (Theorem 3.1 of the paper, in the form of its Appendix D code)::

        P[correct >= v] <= beta + 2 m delta alpha,
        beta  = P[W >= v],                     W ~ Binomial(r, e^eps / (1 + e^eps)),
        alpha = max_{1 <= i <= v} P[v > W >= v - i] / i.

    The lower bound at confidence ``1 - p`` is the largest eps whose bound on the p-value
    is still below ``p``: at that eps, seeing ``v`` correct guesses would be too unlikely,
    so the run is not (eps, delta)-DP, unless the 1 - p confidence event failed. The
    p-value decreases in eps, so bisection finds it. The bound is valid whatever the
    scores are (a poor score only makes it weaker), as long as ``k+`` and ``k-`` are fixed
    before looking at the scores.

White-box scores for gradient canaries
    A gradient canary is a record whose clipped gradient is a fixed vector of norm C
    (here: C on one coordinate), added to the step's clipped sum whenever the canary is
    included in the data and Poisson-sampled (rate q). An auditor who sees every step's
    noisy sum and knows every other record's contribution (DP's adversary may) is left
    with, per step, ``x_t = noise + C 1[sampled]`` on the canary's coordinate.
    :func:`gradient_canary_scores` sums the per-step log-likelihood ratios of "included"
    against "excluded", ``log(1 - q + q exp((x_t / C - 1/2) / sigma^2))``: the
    Neyman-Pearson statistic for the subsampled Gaussian mechanism, the tightest score
    for these canaries.

Membership inference
    :func:`membership_inference` scores members against non-members: the ROC AUC
    (Mann-Whitney, ties counted half) and the largest TPR at a false-positive rate of at
    most ``fpr`` over all score thresholds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from privacy.errors import PrivacyError, PrivacyInputError

__all__ = [
    "AuditBoundExceeded",
    "MembershipInference",
    "OneRunAudit",
    "audit_one_run",
    "check_bound_below",
    "gradient_canary_scores",
    "guesses_from_scores",
    "membership_inference",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
]

# Bisection stops when the bracket is this narrow; the lower end is returned, so the
# reported bound never exceeds the exact one.
_EPS_TOLERANCE = 1e-6
# Above this epsilon the binomial's success probability is 1 in double precision.
_EPS_CEILING = 40.0


class AuditBoundExceeded(PrivacyError):
    """The empirical lower bound exceeds the accountant's epsilon: a DP bug (exit 1)."""


@dataclass(frozen=True, slots=True)
class OneRunAudit:
    """The outcome of a one-run audit: counts, and the epsilon lower bound they imply."""

    canaries: int
    included: int
    guesses: int
    correct: int
    delta: float
    confidence: float
    epsilon_lower_bound: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MembershipInference:
    """How well a score separates members from non-members."""

    members: int
    non_members: int
    auc: float
    fpr: float
    tpr_at_fpr: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


def one_run_p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[at least ``correct`` right of ``guesses``] under (epsilon, delta)-DP."""
    _check_counts(m, guesses, correct)
    if not (_is_real(epsilon) and epsilon >= 0):
        raise PrivacyInputError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    _check_probability("delta", delta, allow_zero=True)
    q = float(special.expit(epsilon))  # accuracy of eps-DP randomized response
    beta = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return min(beta, 1.0)
    # P[v > W >= v - i] for i = 1..v, as a running sum of the pmf from v - 1 down to 0.
    below = np.cumsum(stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q))
    alpha = float(np.max(below / np.arange(1, correct + 1)))
    return min(beta + 2 * m * delta * alpha, 1.0)


def one_run_epsilon_lower_bound(
    m: int, guesses: int, correct: int, delta: float, confidence: float
) -> float:
    """The largest epsilon that ``correct`` of ``guesses`` refutes at ``confidence`` (0 if none).

    Bisection keeps ``p(low) < 1 - confidence <= p(high)`` and returns ``low``.
    """
    _check_probability("confidence", confidence)
    significance = 1.0 - confidence
    if one_run_p_value(m, guesses, correct, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, guesses, correct, high, delta) < significance:
        low, high = high, 2 * high
        if high > _EPS_CEILING:
            return low
    while high - low > _EPS_TOLERANCE:
        middle = (low + high) / 2
        if one_run_p_value(m, guesses, correct, middle, delta) < significance:
            low = middle
        else:
            high = middle
    return low


def guesses_from_scores(scores: np.ndarray, positive: int, negative: int) -> np.ndarray:
    """+1 for the ``positive`` highest scores, -1 for the ``negative`` lowest, 0 elsewhere.

    Ties are broken by position (a stable sort), never by membership.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise PrivacyInputError("scores must be a one-dimensional array of finite numbers")
    for name, count in (("positive", positive), ("negative", negative)):
        if not _is_count(count):
            raise PrivacyInputError(f"{name} guesses must be an integer >= 0, got {count!r}")
    if positive + negative > len(scores):
        raise PrivacyInputError(
            f"{positive} + {negative} guesses exceed the {len(scores)} canaries scored"
        )
    order = np.argsort(scores, kind="stable")
    guesses = np.zeros(len(scores), dtype=np.int8)
    guesses[order[:negative]] = -1
    guesses[order[len(scores) - positive :]] = 1
    return guesses


def audit_one_run(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    positive: int,
    negative: int,
    delta: float,
    confidence: float,
) -> OneRunAudit:
    """Guess membership from ``scores`` (higher: more likely included) and bound epsilon."""
    included = np.asarray(included, dtype=bool)
    guesses = guesses_from_scores(scores, positive, negative)
    if included.shape != guesses.shape:
        raise PrivacyInputError(f"{len(included)} inclusion flags for {len(guesses)} canary scores")
    truth = np.where(included, 1, -1)
    correct = int(np.sum(guesses * truth > 0))
    made = int(np.count_nonzero(guesses))
    return OneRunAudit(
        canaries=len(guesses),
        included=int(included.sum()),
        guesses=made,
        correct=correct,
        delta=float(delta),
        confidence=float(confidence),
        epsilon_lower_bound=one_run_epsilon_lower_bound(
            len(guesses), made, correct, delta, confidence
        ),
    )


def gradient_canary_scores(
    residuals: np.ndarray, sample_rate: float, noise_multiplier: float
) -> np.ndarray:
    """Per canary, the summed log-likelihood ratio of its per-step ``residuals``
    (steps x canaries, in units of the canary's norm C; see the module notes)."""
    residuals = np.asarray(residuals, dtype=np.float64)
    if residuals.ndim != 2 or not np.isfinite(residuals).all():
        raise PrivacyInputError("residuals must be a finite (steps x canaries) array")
    if not (_is_real(sample_rate) and 0 < sample_rate <= 1):
        raise PrivacyInputError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if not (_is_real(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyInputError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    shifted = (residuals - 0.5) / noise_multiplier**2 + math.log(sample_rate)
    if sample_rate == 1:
        return shifted.sum(0)
    return np.logaddexp(math.log1p(-sample_rate), shifted).sum(0)


def check_bound_below(lower_bound: float, accountant_epsilon: float, what: str) -> None:
    """Fail loudly if an empirical lower bound exceeds the accountant's epsilon for ``what``.

    DP-SGD's accounting is an upper bound; a larger lower bound means the mechanism is not
    what was accounted for (a bug in clipping, noise or sampling), or that the audit's
    one-in-twenty error event happened.
    """
    if lower_bound > accountant_epsilon:
        raise AuditBoundExceeded(
            f"{what}: the empirical epsilon lower bound {lower_bound:.4f} exceeds the "
            f"accountant's epsilon {accountant_epsilon:.4f}; the training run is not as "
            "private as accounted: do not release, investigate clipping, noise and sampling"
        )


def membership_inference(
    member_scores: np.ndarray, non_member_scores: np.ndarray, fpr: float = 0.01
) -> MembershipInference:
    """ROC AUC and TPR at ``fpr`` of a score that is higher for members."""
    members = np.asarray(member_scores, dtype=np.float64)
    others = np.asarray(non_member_scores, dtype=np.float64)
    for name, values in (("member", members), ("non-member", others)):
        if values.ndim != 1 or len(values) == 0 or not np.isfinite(values).all():
            raise PrivacyInputError(
                f"{name} scores must be a non-empty 1-d array of finite numbers"
            )
    _check_probability("fpr", fpr)
    ranks = stats.rankdata(np.concatenate([members, others]))
    n_in, n_out = len(members), len(others)
    auc = (ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)
    return MembershipInference(
        members=n_in,
        non_members=n_out,
        auc=float(auc),
        fpr=float(fpr),
        tpr_at_fpr=_tpr_at_fpr(members, others, fpr),
    )


def _tpr_at_fpr(members: np.ndarray, others: np.ndarray, fpr: float) -> float:
    """Largest share of members scoring >= t over thresholds t with at most fpr of others."""
    allowed = math.floor(fpr * len(others))  # non-members allowed at or above the threshold
    ranked = np.sort(others)[::-1]
    if allowed >= len(ranked):
        return 1.0
    # Any threshold above the (allowed + 1)-th highest non-member score admits at most
    # ``allowed`` non-members; the members strictly above it are the best achievable.
    threshold = ranked[allowed]
    return float(np.mean(members > threshold))


def _check_counts(m: int, guesses: int, correct: int) -> None:
    if not all(_is_count(value) for value in (m, guesses, correct)) or not (
        0 <= correct <= guesses <= m and m > 0
    ):
        raise PrivacyInputError(
            f"need integers 0 <= correct <= guesses <= m, m > 0; got m={m!r}, "
            f"guesses={guesses!r}, correct={correct!r}"
        )


def _check_probability(name: str, value: float, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (_is_real(value) and low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise PrivacyInputError(f"{name} must be in {bound}, got {value!r}")


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0


def _is_real(value: object) -> bool:
    return (
        isinstance(value, int | float | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
