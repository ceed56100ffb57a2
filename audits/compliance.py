"""The compliance pack's record: gates, NIST AI RMF map and the evidence they stand on.

:class:`ComplianceReport` is what ``reports/compliance.json`` holds and what
the HTML page renders, so the page never says anything the JSON does not.
The evidence sections echo the stage outputs they come from (plain JSON), so
a reviewer can trace every number on the page to a file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from audits.gates import GateResult
from audits.nist import Catalog, MappedSubcategory, status_counts

FORMAT = "custodian-compliance/v1"
SIGNOFF_AUTHORITY = "custodian release check"


class CatalogInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog: str
    version: str
    framework: str
    framework_version: str
    source: str
    note: str
    counts: dict[str, int]


class AuditLogStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    verified: bool
    summary: str
    entries: int = Field(ge=0)
    tree_size: int | None = None
    root_hash: str | None = None
    signed_at: str | None = None


class ManifestStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    files: int = Field(ge=0)
    git_commit: str | None
    dvc_lock_sha256: str | None
    differences: list[str]


class Documents(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_card: str
    datasheets: dict[str, str]
    croissant: dict[str, str]


class ComplianceReport(BaseModel):
    """``reports/compliance.json`` (format ``custodian-compliance/v1``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-compliance/v1"] = FORMAT
    passed: bool
    subject: dict[str, JsonValue]
    gates: list[GateResult]
    nist_catalog: CatalogInfo
    nist_ai_rmf: list[MappedSubcategory]
    datasets: list[dict[str, JsonValue]]
    validation: dict[str, JsonValue]
    findings: list[dict[str, JsonValue]]
    privacy: dict[str, JsonValue]
    ledger: dict[str, JsonValue]
    metrics: dict[str, JsonValue] | None
    calibration: list[dict[str, JsonValue]]
    training_curve: list[dict[str, JsonValue]]
    audit_log: AuditLogStatus
    manifest: ManifestStatus
    documents: Documents
    signoffs: dict[str, JsonValue]

    @model_validator(mode="after")
    def _passed_means_every_gate_cleared(self) -> ComplianceReport:
        if self.passed != all(gate.cleared for gate in self.gates):
            raise ValueError("passed must be true exactly when every gate passed or was waived")
        return self


def catalog_info(catalog: Catalog, rows: list[MappedSubcategory]) -> CatalogInfo:
    return CatalogInfo(
        catalog=catalog.catalog,
        version=catalog.version,
        framework=catalog.framework,
        framework_version=catalog.framework_version,
        source=catalog.source,
        note=catalog.note,
        counts=status_counts(rows),
    )


def pending_signoffs() -> dict[str, JsonValue]:
    """Sign-offs sign this pack, so none can exist when it is written."""
    return {
        "status": "pending",
        "recorded": [],
        "authoritative": SIGNOFF_AUTHORITY,
        "note": (
            "Reviewers sign this pack after it is written (custodian signoff --as NAME); "
            "custodian release check verifies that the required sign-offs cover exactly "
            "these artifacts."
        ),
    }
