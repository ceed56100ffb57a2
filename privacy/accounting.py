"""Privacy accounting for DP-SGD with Poisson sampling, on top of Opacus' accountants.

The unit of accounting is :class:`SgdSteps`: ``steps`` iterations of the Poisson-subsampled
Gaussian mechanism with one noise multiplier and one sample rate (Opacus keeps the same
triple as a bare tuple in ``accountant.history``). Several runs over the same data compose
by putting all their :class:`SgdSteps` into *one* accountant; epsilons are never added,
because adding them over-states the loss and hides the accountant's real composition.

Accountants (``AccountantKind``):

- ``prv`` (default): Opacus' PRV accountant (Gopi et al. 2021), a numerical composition
  that returns an *upper bound* ``estimate + eps_error``. :func:`epsilon_of` asks for an
  error of at most ``_PRV_RELATIVE_ERROR`` of epsilon (never below an absolute
  ``_PRV_MIN_EPS_ERROR``), so the bound stays within a fraction of a percent of the tight
  value without paying for needless precision at large epsilon.
- ``rdp``: Opacus' RDP accountant, evaluated at the same orders as Google's dp-accounting
  (``_RDP_ORDERS``) so that large orders (small epsilons) are covered too. At fractional
  orders Opacus' RDP matches numerical quadrature while dp-accounting 0.6.0 over-estimates
  it (or drops the order), so where the best order is fractional our ``rdp`` epsilon can be
  slightly *below* dp-accounting's (0.42% at most on the tested grid) without being an
  under-estimate.
- ``gdp`` is refused: the Gaussian-DP accountant relies on a central limit approximation
  that can *under*-estimate epsilon, which this project must never do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from privacy.errors import PrivacyError, PrivacyInputError

__all__ = [
    "AccountantKind",
    "SgdSteps",
    "calibrate_noise",
    "check_delta",
    "default_delta",
    "epsilon_of",
    "validate_delta",
]

# PRV precision: a first pass at Opacus' default absolute error, then, if that error is
# large relative to the epsilon found, a second pass at this relative error.
_PRV_COARSE_EPS_ERROR = 0.01
_PRV_RELATIVE_ERROR = 0.002
# Below this the discretisation mesh (and memory) grows without bound for tiny epsilons;
# the bound stays an upper bound, only a looser one.
_PRV_MIN_EPS_ERROR = 1e-3

# Same orders as dp_accounting.rdp.DEFAULT_RDP_ORDERS; Opacus' defaults stop at 63,
# which over-states small epsilons several-fold.
_RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
)

# Calibration stops once the epsilon reached is within this fraction below the target.
_CALIBRATION_RELATIVE_TOLERANCE = 0.005
# If the verified epsilon lands above the target (the search and the verification use
# slightly different PRV precisions), the noise multiplier is raised by this factor.
_CALIBRATION_NUDGE = 1.001
_CALIBRATION_MAX_NUDGES = 50


class AccountantKind(StrEnum):
    """Privacy accountants this project accepts."""

    PRV = "prv"
    RDP = "rdp"

    @classmethod
    def parse(cls, value: str) -> AccountantKind:
        """Return the kind named ``value``; refused or unknown names raise PrivacyInputError."""
        if isinstance(value, cls):
            return value
        refusal = _REFUSED_KINDS.get(value)
        if refusal is not None:
            raise PrivacyInputError(
                f"accountant {value!r} is refused: {refusal}; use one of: {_valid_kinds()}"
            )
        try:
            return cls(value)
        except ValueError:
            raise PrivacyInputError(
                f"unknown accountant {value!r}; use one of: {_valid_kinds()}"
            ) from None


_REFUSED_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "gdp": (
            "the Gaussian-DP accountant uses a central limit approximation that can "
            "under-estimate epsilon (notably for few steps or large sample rates)"
        ),
    }
)


def _valid_kinds() -> str:
    return ", ".join(kind.value for kind in AccountantKind)


@dataclass(frozen=True, slots=True)
class SgdSteps:
    """``steps`` DP-SGD iterations with Poisson sampling at one noise level.

    Each iteration is the Poisson-subsampled Gaussian mechanism: every record enters the
    batch independently with probability ``sample_rate``, and Gaussian noise of standard
    deviation ``noise_multiplier * max_grad_norm`` is added to the sum of clipped
    per-sample gradients.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        problems = []
        if not _is_real(self.noise_multiplier) or not self.noise_multiplier > 0:
            problems.append(f"noise_multiplier must be > 0, got {self.noise_multiplier!r}")
        if not _is_real(self.sample_rate) or not 0 < self.sample_rate <= 1:
            problems.append(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            problems.append(f"steps must be an integer >= 0, got {self.steps!r}")
        if problems:
            raise PrivacyInputError("invalid SGD steps: " + "; ".join(problems))

    def as_opacus(self) -> tuple[float, float, int]:
        """The ``(noise_multiplier, sample_rate, steps)`` tuple Opacus keeps in its history."""
        return (float(self.noise_multiplier), float(self.sample_rate), self.steps)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _prv_epsilon(accountant: IAccountant, delta: float) -> float:
    coarse = accountant.get_epsilon(delta, eps_error=_PRV_COARSE_EPS_ERROR)
    wanted = _PRV_RELATIVE_ERROR * coarse
    if wanted >= _PRV_COARSE_EPS_ERROR:
        return float(coarse)
    return float(accountant.get_epsilon(delta, eps_error=max(wanted, _PRV_MIN_EPS_ERROR)))


def _rdp_epsilon(accountant: IAccountant, delta: float) -> float:
    return float(accountant.get_epsilon(delta, alphas=list(_RDP_ORDERS)))


@dataclass(frozen=True, slots=True)
class _AccountantSpec:
    """How to build one Opacus accountant and query it at this project's precision."""

    accountant: type[IAccountant]
    epsilon: Callable[[IAccountant, float], float]
    # Keyword arguments for ``get_epsilon`` during calibration, given the target epsilon.
    calibration_kwargs: Callable[[float], dict[str, Any]]


_ACCOUNTANTS: Mapping[AccountantKind, _AccountantSpec] = MappingProxyType(
    {
        AccountantKind.PRV: _AccountantSpec(
            accountant=PRVAccountant,
            epsilon=_prv_epsilon,
            calibration_kwargs=lambda target: {
                "eps_error": max(_PRV_RELATIVE_ERROR * target, _PRV_MIN_EPS_ERROR)
            },
        ),
        AccountantKind.RDP: _AccountantSpec(
            accountant=RDPAccountant,
            epsilon=_rdp_epsilon,
            calibration_kwargs=lambda _target: {"alphas": list(_RDP_ORDERS)},
        ),
    }
)


def check_delta(delta: float) -> None:
    """Refuse ``delta`` outside (0, 1)."""
    if not _is_real(delta) or not 0 < delta < 1:
        raise PrivacyInputError(f"delta must be in (0, 1), got {delta!r}")


def epsilon_of(
    history: Sequence[SgdSteps], delta: float, kind: AccountantKind = AccountantKind.PRV
) -> float:
    """Epsilon at ``delta`` of all of ``history`` composed by one accountant of ``kind``."""
    check_delta(delta)
    spec = _ACCOUNTANTS[AccountantKind.parse(kind)]
    # A zero-step entry releases nothing, and PRV's discretisation divides by the step count.
    taken = [entry.as_opacus() for entry in history if entry.steps > 0]
    if not taken:
        return 0.0
    accountant = spec.accountant()
    accountant.history = taken
    try:
        return spec.epsilon(accountant, delta)
    except (MemoryError, RuntimeError, ValueError) as err:
        # PRV discretises the privacy loss on a grid sized by epsilon; for epsilons far
        # beyond any meaningful guarantee that grid no longer fits in memory.
        raise PrivacyError(
            f"the {spec.accountant.mechanism()} accountant cannot compute epsilon at delta "
            f"{delta:g} for {len(taken)} history entries ({type(err).__name__}: {err}); "
            "the noise is likely far too low for any meaningful guarantee"
        ) from err


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    kind: AccountantKind = AccountantKind.PRV,
) -> float:
    """Smallest noise multiplier found whose epsilon after ``steps`` is <= ``target_epsilon``.

    The result is verified with :func:`epsilon_of` (fail closed): the epsilon it yields is
    at most ``target_epsilon`` and, in practice, within about 1% below it.
    """
    if not _is_real(target_epsilon) or not target_epsilon > 0:
        raise PrivacyInputError(f"target_epsilon must be > 0, got {target_epsilon!r}")
    check_delta(delta)
    kind = AccountantKind.parse(kind)
    # The placeholder noise multiplier is replaced below; this validates the other fields.
    planned = SgdSteps(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps)
    if planned.steps < 1:
        raise PrivacyInputError(f"steps must be >= 1 to calibrate noise, got {steps!r}")
    spec = _ACCOUNTANTS[kind]
    try:
        with warnings.catch_warnings():
            # The search probes huge noise levels whose best RDP order is the largest one;
            # Opacus warns about each probe, which says nothing about the final result.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=planned.sample_rate,
                steps=planned.steps,
                accountant=spec.accountant.mechanism(),
                epsilon_tolerance=_CALIBRATION_RELATIVE_TOLERANCE * target_epsilon,
                **spec.calibration_kwargs(target_epsilon),
            )
    except ValueError as err:
        raise PrivacyInputError(
            f"target epsilon {target_epsilon:g} at delta {delta:g} is unreachable with "
            f"sample rate {sample_rate:g} over {steps} steps ({err}); raise the target, "
            "lower the sample rate or take fewer steps"
        ) from err
    return _verified(sigma, target_epsilon, delta, planned, kind)


def _verified(
    sigma: float, target_epsilon: float, delta: float, planned: SgdSteps, kind: AccountantKind
) -> float:
    for _ in range(_CALIBRATION_MAX_NUDGES):
        history = [SgdSteps(sigma, planned.sample_rate, planned.steps)]
        if epsilon_of(history, delta, kind) <= target_epsilon:
            return float(sigma)
        sigma *= _CALIBRATION_NUDGE
    raise PrivacyError(
        f"noise calibration failed: no noise multiplier up to {sigma:g} verified "
        f"epsilon <= {target_epsilon:g} with the {kind} accountant"
    )


def validate_delta(delta: float, n_records: int) -> None:
    """Refuse ``delta`` unless ``0 < delta < 1/n_records``.

    A delta of 1/N admits mechanisms that publish one whole record outright, so the
    guarantee is only meaningful for delta well below 1/N.
    """
    _check_records(n_records)
    check_delta(delta)
    if delta * n_records >= 1:
        raise PrivacyInputError(
            f"delta={delta:g} must be below 1/N = {1 / n_records:.3g} for N={n_records} "
            f"records; use e.g. {default_delta(n_records):g}"
        )


def default_delta(n_records: int) -> float:
    """The largest power of ten at most ``1/(10 N)``: e.g. N=20,190 gives 1e-6.

    At least ten times below 1/N, as a round number that reads well in params and
    reports. ``len(str(10N - 1))`` is ``ceil(log10(10N))`` in exact integer arithmetic.
    """
    _check_records(n_records)
    exponent = len(str(10 * n_records - 1))
    return float(f"1e-{exponent}")


def _check_records(n_records: int) -> None:
    if not isinstance(n_records, int) or isinstance(n_records, bool) or n_records < 1:
        raise PrivacyInputError(f"the number of records must be an integer >= 1, got {n_records!r}")
