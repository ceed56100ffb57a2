"""What a model's differential-privacy guarantee says, in plain words, from privacy.json.

The compliance page and the model card state the same sentence: the unit of privacy, the
neighbouring relation (implied by the unit), the (epsilon, delta) it holds at, and what
the guarantee covers and does not ("How to DP-fy ML", Ponomareva et al. 2023, asks for
exactly these). A privacy.json written before units existed is record-level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["guarantee_sentence", "not_covered"]


def guarantee_sentence(privacy: Mapping[str, Any]) -> str:
    """One plain sentence (two under record-level DP: the group-privacy cost)."""
    epsilon, delta = privacy.get("epsilon"), privacy.get("delta")
    if not isinstance(epsilon, int | float) or not isinstance(delta, int | float):
        return "The privacy report states no (epsilon, delta): no guarantee can be stated."
    bound = (
        f"by at most e^{epsilon:.3f} (a factor of {_factor(epsilon)}), except with probability "
        f"{delta:g}"
    )
    scope = (
        "; this covers the released weights, not the validation-based early stopping and "
        "hyperparameter choice, nor the published evaluation metrics."
    )
    if privacy.get("unit") == "person":
        people, rows = privacy.get("people"), privacy.get("rows")
        population = privacy.get("population")
        who = f" of {population}" if population else ""
        return (
            f"Any one participant's records, all together, change the model's distribution "
            f"{bound} (person-level DP: neighbouring datasets differ by all the records of one "
            f"person{who}; {people} people, {rows} rows, at most "
            f"{privacy.get('max_rows_per_person')} rows per person){scope}"
        )
    sentence = (
        f"Any one record changes the model's distribution {bound} (record-level DP: "
        f"neighbouring datasets differ by one row){scope}"
    )
    group = privacy.get("group_privacy")
    if isinstance(group, Mapping):
        sentence += (
            f" Group-privacy conversion for a person with {group.get('rows')} records (the "
            f"most any one person has): epsilon {group.get('epsilon'):.3f} at delta "
            f"{group.get('delta'):.3g}."
        )
    elif privacy.get("unit") is None:
        sentence += " The unit of privacy was not recorded; a person with several records is "
        sentence += "protected only by group privacy."
    return sentence


def not_covered(privacy: Mapping[str, Any]) -> list[str]:
    """What the report says the guarantee does not cover (empty if not recorded)."""
    covers = privacy.get("covers")
    if not isinstance(covers, Mapping):
        return []
    return [str(item) for item in covers.get("not_covered", [])]


def _factor(epsilon: float) -> str:
    return f"{math.exp(epsilon):.3g}" if epsilon < 700 else "more than 10^300"
