"""What a reviewer must know before any evidence: what the model is, who answers for it, the law.

These records come from ``params.yaml`` ``policy`` (people write them; the pipeline cannot
know them) and are shown at the top of the compliance page, in the model card and in the
Croissant metadata. Each is a frozen model that rejects unknown keys.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=500)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelIdentity(_Record):
    """The header of the page: what the model predicts, which version, whose it is, for whom."""

    predicts: Line
    version: Line
    owner: Line
    contact: Line
    license: Line
    intended_use: Line
    intended_users: Line
    out_of_scope: list[Line] = Field(min_length=1)


class DataProtection(_Record):
    """The facts a data-protection review asks of the training data (not in its provenance)."""

    population: Line
    period: Line
    lawful_basis: Line
    dpia_reference: Line
    retention: Line


class AiActCategory(StrEnum):
    """The system's class under the EU AI Act, as the provider assessed it."""

    HIGH_RISK = "high_risk"  # Art. 6 and Annex III (e.g. 5(c): health-insurance pricing)
    LIMITED_RISK = "limited_risk"  # Art. 50 transparency duties only
    MINIMAL_RISK = "minimal_risk"
    # Outside the Act, e.g. Art. 2(6): developed and used for scientific research only.
    OUT_OF_SCOPE = "out_of_scope"


class AiActClassification(_Record):
    category: AiActCategory
    basis: Line  # the article or annex point, e.g. "Art. 2(6)" or "Annex III 5(c)"
    reason: Reason
