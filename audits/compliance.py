"""The compliance pack's record: gates, NIST AI RMF map and the evidence they stand on.

:class:`ComplianceReport` is what ``reports/compliance.json`` holds and what
the HTML page renders, so the page never says anything the JSON does not.
The evidence sections echo the stage outputs they come from (plain JSON), so
a reviewer can trace every number on the page to a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from audits.gates import GateResult
from audits.identity import AiActClassification, DataProtection, ModelIdentity
from audits.nist import Catalog, MappedSubcategory, Status, status_counts

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


class WaivedGate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    reason: str


class Decision(BaseModel):
    """What the page opens with: can this be released, and if not, what does it wait for.

    The pack is written before anyone signs it (sign-offs sign the pack), so its verdict is
    at best ``awaiting_review``: ``custodian release check`` is the only "yes". ``passed``
    in the report means "every gate cleared", never "released".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["blocked", "awaiting_review"]
    headline: str
    failed_gates: list[str]
    waived_gates: list[WaivedGate]
    signoffs_needed: list[str]
    attestations_required: list[str]  # policy.required_attestations not yet attested
    attestations_open: list[str]  # every subcategory a person still has to attest
    warnings: list[str]


class AttestationSummary(BaseModel):
    """The attestations found under ``attestations/`` when the pack was written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: list[str]
    recorded: list[dict[str, JsonValue]]


class ComplianceReport(BaseModel):
    """``reports/compliance.json`` (format ``custodian-compliance/v1``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-compliance/v1"] = FORMAT
    passed: bool
    decision: Decision
    model: ModelIdentity
    data_protection: DataProtection
    ai_act_classification: AiActClassification
    attestations: AttestationSummary
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
        if (self.decision.status == "blocked") == self.passed:
            raise ValueError("the decision is blocked exactly when a gate did not clear")
        return self


def release_decision(
    gates: Sequence[GateResult],
    rows: Iterable[MappedSubcategory],
    *,
    required_roles: Sequence[str],
    required_attestations: Sequence[str],
    metrics: Mapping[str, Any] | None,
    findings: Sequence[Mapping[str, Any]] = (),
) -> Decision:
    """The decision and everything it waits for, from the gates, the map and the metrics."""
    failed = [gate.id.value for gate in gates if not gate.cleared]
    waived = [
        WaivedGate(id=gate.id.value, reason=gate.waiver_reason or "")
        for gate in gates
        if gate.waived
    ]
    rows = list(rows)
    attested = {row.id for row in rows if row.attested_by}
    missing = [item for item in required_attestations if item not in attested]
    open_rows = [
        row.id
        for row in rows
        if row.needs_person and not row.attested_by and row.status is not Status.NOT_APPLICABLE
    ]
    cleared = len(gates) - len(failed)
    if failed:
        headline = (
            f"Release blocked: {len(failed)} of {len(gates)} gates failed ({', '.join(failed)})"
        )
    else:
        waits = [f"sign-off by {' and '.join(required_roles)}"]
        if missing:
            waits.append(f"{len(missing)} required attestation(s) ({', '.join(missing)})")
        headline = (
            f"Not yet releasable: {cleared} of {len(gates)} gates cleared"
            + (f" ({len(waived)} waived)" if waived else "")
            + f"; waiting for {'; '.join(waits)}"
        )
    return Decision(
        status="blocked" if failed else "awaiting_review",
        headline=headline,
        failed_gates=failed,
        waived_gates=waived,
        signoffs_needed=list(required_roles),
        attestations_required=missing,
        attestations_open=open_rows,
        warnings=_warnings(metrics, findings),
    )


def _warnings(
    metrics: Mapping[str, Any] | None, findings: Sequence[Mapping[str, Any]]
) -> list[str]:
    """What a reviewer should weigh though no gate failed on it."""
    if metrics is None:
        return ["reports/metrics.json is missing: utility, fairness and privacy audit unknown"]
    warnings = []
    for group, key in (("slice", "slices"), ("intersectional slice", "intersections")):
        below, clearly, small = [], [], 0
        for attribute, values in sorted((metrics.get(key) or {}).items()):
            for label, entry in values.items():
                if not isinstance(entry, Mapping):
                    continue
                small += bool(entry.get("small"))
                if entry.get("below_baseline") and not entry.get("small"):
                    named = (
                        f"{attribute}={label} ({_num(entry.get('accuracy'))} < "
                        f"{_num(entry.get('baseline_accuracy'))})"
                    )
                    below.append(named)
                    if _interval_below(entry):
                        clearly.append(named)
        if below:
            # Every slice below its baseline is named; for intersections (many, small) only
            # those whose whole interval lies below it, the rest counted.
            named = below if key == "slices" else clearly
            warnings.append(
                f"{len(below)} {group}(s) with accuracy below their majority-class baseline, "
                f"{len(clearly)} with the whole confidence interval below it"
                + (": " + "; ".join(named) if named else "")
            )
        if small:
            warnings.append(f"{small} {group}(s) too small to compare (marked small)")
    for attribute, values in sorted((metrics.get("sensitive_values") or {}).items()):
        if isinstance(values, Mapping) and values.get("fractional"):
            warnings.append(
                f"{values['fractional']} test row(s) have fractional (imputed) {attribute} "
                f"values, bucketed at {values.get('edges')}: "
                + describe_assignment(values.get("fractional_to"))
            )
    reference = metrics.get("reference") or {}
    if reference.get("trained") is False:
        warnings.append(
            "no non-private reference model (policy.allow_nonprivate_reference is false): "
            "the privacy cost is measured against the majority-class baseline"
        )
    serious = [f for f in findings if f.get("severity") == "warning"]
    if serious:
        kinds = sorted({str(f.get("type")) for f in serious})
        warnings.append(f"{len(serious)} leakage check warning(s): {', '.join(kinds)}")
    return warnings


# What metrics.json must hold for its utility and fairness evidence to count as complete.
UTILITY_KEYS = ("baseline", "lift_over_baseline")
FAIRNESS_KEYS = ("fairness", "intersections", "intersection_fairness", "sensitive_values")
SLICE_KEYS = ("base_rate", "tpr", "fpr", "baseline_accuracy", "accuracy_ci", "small")


def utility_complete(metrics: Mapping[str, Any]) -> bool:
    """Whether ``metrics`` states the majority-class baseline next to the model's utility."""
    return all(key in metrics for key in UTILITY_KEYS)


def fairness_complete(metrics: Mapping[str, Any]) -> bool:
    """Whether ``metrics`` carries the fairness analysis the catalog's rules count on:
    base rates, error rates, intervals and intersections, per slice."""
    slices = metrics.get("slices") or {}
    every_slice = [entry for values in slices.values() for entry in values.values()]
    return (
        all(key in metrics for key in FAIRNESS_KEYS)
        and bool(every_slice)
        and all(isinstance(e, Mapping) and all(k in e for k in SLICE_KEYS) for e in every_slice)
    )


def _interval_below(entry: Mapping[str, Any]) -> bool:
    interval, baseline = entry.get("accuracy_ci"), entry.get("baseline_accuracy")
    return (
        isinstance(interval, list)
        and len(interval) == 2
        and isinstance(interval[1], int | float)
        and isinstance(baseline, int | float)
        and interval[1] < baseline
    )


def describe_assignment(assigned: object) -> str:
    """``{"<0.5": 2, ">=0.5": 4}`` as ``2 to <0.5, 4 to >=0.5``."""
    if not isinstance(assigned, Mapping) or not assigned:
        return "none"
    return ", ".join(f"{count} to {bucket}" for bucket, count in assigned.items())


def _num(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


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
