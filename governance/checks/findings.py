"""The finding record every leakage and contamination check reports.

A finding crosses the package boundary (``reports/checks.json``, the CLI's
``--json``, GX results), so it validates on construction, rejects unknown
keys and never changes after it is made.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator


class FindingType(StrEnum):
    """SPEC's finding vocabulary, in SPEC's order (the order reports list them in).

    What ``Finding.count`` counts differs by type:

    - ``exact_duplicate``: test rows equal to a train row;
    - ``near_duplicate``: test rows within tolerance of a train row;
    - ``group_leakage``: identifier values present in both splits;
    - ``temporal_leakage``: train rows later than the earliest test row;
    - ``target_leakage``: leaking columns (1 for a single column, else the
      size of the minimal set that together gives the label away);
    - ``proxy``: input columns that stand in for the sensitive attribute(s);
    - ``reference_contamination``: reference rows found in train;
    - ``duplicate_rows``: rows repeating an earlier row of the same split;
    - ``conflicting_labels``: rows whose features recur with another label;
    - ``pii``: rows whose value in the column looks like personal data.
    """

    exact_duplicate = "exact_duplicate"
    near_duplicate = "near_duplicate"
    group_leakage = "group_leakage"
    temporal_leakage = "temporal_leakage"
    target_leakage = "target_leakage"
    proxy = "proxy"
    reference_contamination = "reference_contamination"
    duplicate_rows = "duplicate_rows"
    conflicting_labels = "conflicting_labels"
    pii = "pii"


class Severity(StrEnum):
    """``critical`` stops the pipeline unless waived; the others are for review."""

    critical = "critical"
    warning = "warning"
    info = "info"


Rows = tuple[NonNegativeInt, ...]


class Finding(BaseModel):
    """One problem found by a check, with the rows on each side that show it.

    Row numbers are 0-based positions in the frames as read (not index labels).
    Row lists are capped (``rows_truncated``); ``count`` is always the full count.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: FindingType
    severity: Severity
    count: NonNegativeInt
    columns: tuple[str, ...]
    train_rows: Rows = ()
    test_rows: Rows = ()
    reference_rows: Rows = ()
    reference: str | None = None
    rows_truncated: bool = False
    # target_leakage: a short rule that states how the columns give the label away.
    rule: str | None = None
    # proxy: the declared sensitive attribute(s) the finding's columns stand in for.
    sensitive_columns: tuple[str, ...] = ()
    detail: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _reference_rows_need_a_reference(self) -> Finding:
        if self.reference_rows and self.reference is None:
            raise ValueError("reference_rows given without the reference they belong to")
        return self
