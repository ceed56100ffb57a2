"""What a reviewer must know before any evidence: what the model is, who answers for it, the law.

These records come from ``params.yaml`` ``policy`` (people write them; the pipeline cannot
know them) and are shown at the top of the compliance page, in the model card and in the
Croissant metadata. Each is a frozen model that rejects unknown keys.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

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
    # The period as dates (Croissant's rai:dataCollectionTimeframe), where they are known.
    collected_from: date | None = None
    collected_to: date | None = None
    lawful_basis: Line
    dpia_reference: Line
    retention: Line

    @model_validator(mode="after")
    def _ordered(self) -> DataProtection:
        if (self.collected_from is None) != (self.collected_to is None):
            raise ValueError("give both collected_from and collected_to, or neither")
        if self.collected_from and self.collected_to and self.collected_from > self.collected_to:
            raise ValueError("collected_from is after collected_to")
        return self


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
