"""The unit of privacy: what one "neighbouring" change of the training data is.

``person`` (the default whenever the dataset declares an identifier column): two datasets
are neighbours when they differ by *all the rows of one person*. DP-SGD then samples
people (each person's rows all in or all out of a step), sums each person's gradient over
their rows and clips that sum as one contribution, so the Gaussian mechanism's
sensitivity is one person, and the accountant's sample rate is over people.

``record`` (explicit opt-in): neighbours differ by one row. A person with ``k`` rows is
then protected only by group privacy (:func:`group_privacy`): ``k epsilon`` and
``k e^((k-1) epsilon) delta``, which for a handful of rows is often no guarantee at all;
reports show that conversion for the largest ``k`` in the data, labelled as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from privacy.errors import PrivacyInputError

__all__ = ["COVERS", "GroupGuarantee", "PrivacyUnit", "group_privacy"]


class PrivacyUnit(StrEnum):
    """``privacy.unit``: what the (epsilon, delta) guarantee protects."""

    PERSON = "person"
    RECORD = "record"

    @property
    def neighbouring(self) -> str:
        """The neighbouring relation, in words."""
        return _NEIGHBOURING[self]


_NEIGHBOURING = {
    PrivacyUnit.PERSON: "add or remove all of one person's records (Poisson sampling over people)",
    PrivacyUnit.RECORD: "add or remove one record (Poisson sampling over records)",
}

# What the guarantee covers, and what it does not (privacy.json's ``covers``). Early
# stopping and the choice of the best epoch read the validation split without noise:
# declared public choices, not accounted (README, "What the guarantee covers").
COVERS: dict[str, tuple[str, ...]] = {
    "covered": (
        "the released model weights (every DP-SGD step, including steps of runs that "
        "were stopped, resumed or audited, composed in the lifetime ledger)",
    ),
    "not_covered": (
        "validation-based early stopping and best-epoch selection (declared public "
        "choices: the validation split is read without noise)",
        "hyperparameter choice (params.yaml is a public choice; tuning runs are charged "
        "only as DP training runs, not for the selection among them)",
        "published evaluation metrics (test and slice metrics, calibration, robustness) "
        "computed from held-out rows without noise",
        "the per-epoch training loss (an operator diagnostic)",
    ),
}


@dataclass(frozen=True, slots=True)
class GroupGuarantee:
    """What an (epsilon, delta) record-level guarantee gives a group of ``rows`` records."""

    rows: int
    epsilon: float
    delta: float


def group_privacy(epsilon: float, delta: float, rows: int) -> GroupGuarantee:
    """The group-privacy conversion: ``(k eps, k e^((k-1) eps) delta)`` for ``k = rows``.

    Standard bound (Dwork and Roth 2014, Lemma 2.2 extended to approximate DP); delta is
    capped at 1 (a bound of 1 says nothing).
    """
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise PrivacyInputError(f"rows must be an integer >= 1, got {rows!r}")
    if not 0 <= epsilon < math.inf or not 0 < delta < 1:
        raise PrivacyInputError(
            f"need finite epsilon >= 0 and delta in (0, 1), got {epsilon}, {delta}"
        )
    exponent = (rows - 1) * epsilon + math.log(rows * delta)
    return GroupGuarantee(
        rows=rows, epsilon=rows * epsilon, delta=min(1.0, math.exp(min(exponent, 0.0)))
    )
