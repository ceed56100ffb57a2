"""Privacy accounting checked against Google's dp-accounting and against quadrature."""

import itertools
import logging
import math

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant, rdp_privacy_accountant
from opacus.accountants.analysis import rdp as opacus_rdp
from scipy import integrate
from scipy.stats import norm

from privacy.accounting import (
    AccountantKind,
    SgdSteps,
    calibrate_noise,
    default_delta,
    epsilon_of,
    validate_delta,
)
from privacy.errors import PrivacyInputError

DELTA = 1e-5
GRID = list(itertools.product([0.8, 1.1, 2.0], [0.01, 0.05], [100, 1000]))
# Float noise between two exact computations of the same number.
NUMERICAL_NOISE = 1e-9

# Grid points whose dp-accounting RDP optimum is a fractional order. There dp-accounting
# 0.6.0 over-estimates the RDP of the subsampled Gaussian (or drops the order as
# non-convergent), while Opacus matches numerical quadrature (see
# test_opacus_fractional_order_rdp_is_exact), so Opacus' epsilon is lower by up to 0.42%.
DP_ACCOUNTING_FRACTIONAL_ORDER_OVERESTIMATE = {
    (0.8, 0.01, 100),
    (0.8, 0.01, 1000),
    (0.8, 0.05, 100),
    (0.8, 0.05, 1000),
    (1.1, 0.01, 100),
    (1.1, 0.01, 1000),
    (1.1, 0.05, 100),
    (1.1, 0.05, 1000),
    (2.0, 0.05, 1000),
}


@pytest.fixture(autouse=True)
def _quiet_dp_accounting(caplog: pytest.LogCaptureFixture) -> None:
    # dp-accounting logs a warning for every fractional order it drops.
    caplog.set_level(logging.ERROR)


def _event(sigma: float, q: float, steps: int) -> dp_accounting.DpEvent:
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _pld_epsilon(sigma: float, q: float, steps: int) -> float:
    accountant = PLDAccountant()
    accountant.compose(_event(sigma, q, steps))
    return accountant.get_epsilon(DELTA)


def _rdp_epsilon(sigma: float, q: float, steps: int) -> float:
    accountant = RdpAccountant()
    accountant.compose(_event(sigma, q, steps))
    return accountant.get_epsilon(DELTA)


@pytest.mark.parametrize(("sigma", "q", "steps"), GRID)
def test_prv_within_2_percent_of_pld_and_never_below(sigma: float, q: float, steps: int) -> None:
    reference = _pld_epsilon(sigma, q, steps)
    ours = epsilon_of([SgdSteps(sigma, q, steps)], DELTA, AccountantKind.PRV)
    assert ours >= reference
    assert ours <= 1.02 * reference


@pytest.mark.parametrize(("sigma", "q", "steps"), GRID)
def test_rdp_within_2_percent_of_dp_accounting(sigma: float, q: float, steps: int) -> None:
    reference = _rdp_epsilon(sigma, q, steps)
    ours = epsilon_of([SgdSteps(sigma, q, steps)], DELTA, AccountantKind.RDP)
    assert abs(ours - reference) <= 0.02 * reference


@pytest.mark.parametrize(
    ("sigma", "q", "steps"),
    [
        pytest.param(
            *point,
            marks=pytest.mark.xfail(
                strict=True,
                reason="dp-accounting 0.6.0 over-estimates RDP at fractional orders",
            ),
        )
        if point in DP_ACCOUNTING_FRACTIONAL_ORDER_OVERESTIMATE
        else point
        for point in GRID
    ],
)
def test_rdp_never_below_dp_accounting(sigma: float, q: float, steps: int) -> None:
    reference = _rdp_epsilon(sigma, q, steps)
    ours = epsilon_of([SgdSteps(sigma, q, steps)], DELTA, AccountantKind.RDP)
    assert ours >= reference * (1 - NUMERICAL_NOISE)


def _quadrature_rdp(q: float, sigma: float, alpha: float) -> float:
    """RDP of one subsampled Gaussian step: log E_{z~N(0,s^2)}[(mu(z)/mu0(z))^alpha]/(alpha-1)."""

    def integrand(z: float) -> float:
        ratio = 1 - q + q * math.exp((2 * z - 1) / (2 * sigma**2))
        return norm.pdf(z, 0, sigma) * ratio**alpha

    value, _ = integrate.quad(integrand, -40 * sigma, 40 * sigma + 5, limit=500, epsrel=1e-12)
    return math.log(value) / (alpha - 1)


@pytest.mark.parametrize(
    ("q", "sigma", "alpha"), [(0.01, 0.8, 1.1), (0.05, 1.1, 1.5), (0.05, 0.8, 2.1)]
)
def test_opacus_fractional_order_rdp_is_exact(q: float, sigma: float, alpha: float) -> None:
    exact = _quadrature_rdp(q, sigma, alpha)
    assert opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=alpha) == (
        pytest.approx(exact, rel=1e-7)
    )
    # The finding behind the expected failures above (a private function: pinned version).
    google = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, sigma, [alpha])
    assert google[0] > exact * (1 + 1e-3)


def test_rdp_composes_by_adding_steps() -> None:
    split = [SgdSteps(1.1, 0.01, 300), SgdSteps(1.1, 0.01, 700)]
    whole = [SgdSteps(1.1, 0.01, 1000)]
    assert epsilon_of(split, DELTA, AccountantKind.RDP) == pytest.approx(
        epsilon_of(whole, DELTA, AccountantKind.RDP), rel=1e-12
    )


def test_empty_history_spends_nothing() -> None:
    assert epsilon_of([], DELTA) == 0.0
    assert epsilon_of([SgdSteps(1.0, 0.01, 0)], DELTA) == 0.0


def test_gdp_is_refused_with_the_reason() -> None:
    with pytest.raises(PrivacyInputError, match="under-estimate"):
        AccountantKind.parse("gdp")
    with pytest.raises(PrivacyInputError, match="under-estimate"):
        epsilon_of([SgdSteps(1.0, 0.01, 10)], DELTA, "gdp")


def test_unknown_accountant_lists_the_valid_ones() -> None:
    with pytest.raises(PrivacyInputError, match="use one of: prv, rdp"):
        AccountantKind.parse("moments")


def test_prv_is_the_default() -> None:
    assert AccountantKind.parse("prv") is AccountantKind.PRV
    history = [SgdSteps(1.1, 0.01, 100)]
    assert epsilon_of(history, DELTA) == epsilon_of(history, DELTA, AccountantKind.PRV)


@pytest.mark.parametrize(
    ("sigma", "q", "steps"),
    [(0.0, 0.01, 10), (-1.0, 0.01, 10), (math.nan, 0.01, 10), (1.0, 0.0, 10), (1.0, 1.5, 10)]
    + [(1.0, 0.01, -1), (1.0, 0.01, 1.5), (1.0, 0.01, True)],
)
def test_sgd_steps_refuse_invalid_values(sigma: float, q: float, steps: int) -> None:
    with pytest.raises(PrivacyInputError, match="invalid SGD steps"):
        SgdSteps(sigma, q, steps)


@pytest.mark.parametrize("kind", list(AccountantKind))
def test_calibrate_noise_hits_target_from_below(kind: AccountantKind) -> None:
    target, q, steps = 1.0, 0.01, 1000
    sigma = calibrate_noise(target, DELTA, q, steps, kind)
    reached = epsilon_of([SgdSteps(sigma, q, steps)], DELTA, kind)
    assert 0.99 * target <= reached <= target


def test_calibrate_noise_refuses_unreachable_target() -> None:
    with pytest.raises(PrivacyInputError, match="unreachable"):
        calibrate_noise(1e-12, DELTA, 0.001, 1, AccountantKind.RDP)


@pytest.mark.parametrize("delta", [1 / 20_190, 1e-4, 0.5])
def test_delta_at_or_above_one_over_n_is_refused(delta: float) -> None:
    with pytest.raises(PrivacyInputError, match=r"must be below 1/N = 4\.95e-05 for N=20190"):
        validate_delta(delta, 20_190)


@pytest.mark.parametrize("delta", [0.0, -1e-6, 1.0, math.nan])
def test_delta_outside_unit_interval_is_refused(delta: float) -> None:
    with pytest.raises(PrivacyInputError, match="delta must be in"):
        validate_delta(delta, 100)


@pytest.mark.parametrize(
    ("n_records", "expected"), [(1, 0.1), (9, 0.01), (10, 0.01), (10_000, 1e-5), (20_190, 1e-6)]
)
def test_default_delta_is_a_power_of_ten_at_least_ten_times_below_one_over_n(
    n_records: int, expected: float
) -> None:
    delta = default_delta(n_records)
    assert delta == expected
    assert delta * n_records <= 0.1
    validate_delta(delta, n_records)
