"""Release gates: each a yes or no on this run's evidence, with the reason in one line.

The pure gates here read the JSON the stages wrote (as plain dicts) and the
policy limits; the report stage adds the verdicts it must compute with other
packages (licenses, audit log, manifest) and calls :func:`decide`, which
applies waivers. Every gate fails closed: missing or malformed evidence is a
failure that names the file, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from audits.errors import AuditError
from audits.nist import EvidenceKind

PRIVACY_REPORT = "reports/privacy.json"
METRICS_REPORT = "reports/metrics.json"
VALIDATION_REPORT = "reports/validation.json"
CHECKS_REPORT = "reports/checks.json"
# The accountant's epsilon is copied into metrics.json; copies may differ by float formatting.
_SAME_EPSILON = 1e-9


class GateId(StrEnum):
    EPSILON = "epsilon"
    DELTA = "delta"
    LIFETIME_BUDGET = "lifetime_budget"
    CRITICAL_FINDINGS = "critical_findings"
    GX_SUITES = "gx_suites"
    LICENSES = "licenses"
    UTILITY = "utility"
    WORST_SLICE_GAP = "worst_slice_gap"
    EMPIRICAL_PRIVACY = "empirical_privacy"
    AUDIT_LOG = "audit_log"
    ARTIFACTS = "artifacts"


@dataclass(frozen=True)
class GateSpec:
    title: str
    evidence: EvidenceKind
    # Integrity gates: evidence that cannot be trusted cannot be waived either.
    waivable: bool = True


GATES: dict[GateId, GateSpec] = {
    GateId.EPSILON: GateSpec("Privacy loss epsilon within policy", EvidenceKind.PRIVACY_ACCOUNTING),
    GateId.DELTA: GateSpec("Privacy delta within policy", EvidenceKind.PRIVACY_ACCOUNTING),
    GateId.LIFETIME_BUDGET: GateSpec(
        "Dataset lifetime privacy budget not exceeded", EvidenceKind.PRIVACY_BUDGET
    ),
    GateId.CRITICAL_FINDINGS: GateSpec(
        "No unwaived critical leakage finding", EvidenceKind.LEAKAGE_CHECKS
    ),
    GateId.GX_SUITES: GateSpec("Great Expectations suites pass", EvidenceKind.DATA_VALIDATION),
    GateId.LICENSES: GateSpec("Dataset licenses allowed by policy", EvidenceKind.LICENSES),
    GateId.UTILITY: GateSpec(
        "Utility on the test split beats the majority-class baseline", EvidenceKind.UTILITY
    ),
    GateId.WORST_SLICE_GAP: GateSpec(
        "Accuracy gap across sensitive slices within policy and not much wider than the data's",
        EvidenceKind.FAIRNESS,
    ),
    GateId.EMPIRICAL_PRIVACY: GateSpec(
        "Empirical privacy audit consistent with the accountant", EvidenceKind.EMPIRICAL_PRIVACY
    ),
    GateId.AUDIT_LOG: GateSpec("Audit log verifies", EvidenceKind.AUDIT_LOG, waivable=False),
    GateId.ARTIFACTS: GateSpec(
        "Artifacts match the manifest", EvidenceKind.MANIFEST, waivable=False
    ),
}


class GatesFailed(AuditError):
    """At least one release gate failed without a waiver (exit 1)."""


class MissingVerdict(AuditError):
    """:func:`decide` was not given a verdict for every gate (a bug: it fails closed)."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str


@dataclass(frozen=True)
class Limits:
    """The policy's thresholds (params.yaml ``policy``)."""

    max_epsilon: float
    max_delta: float
    min_lift_over_baseline: float
    min_roc_auc: float
    max_worst_slice_gap: float
    max_gap_over_data: float
    min_slice_rows: int


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: GateId
    title: str
    passed: bool
    waived: bool
    waiver_reason: str | None
    detail: str
    evidence: tuple[str, ...]

    @property
    def cleared(self) -> bool:
        """Passed, or failed and waived."""
        return self.passed or self.waived


def decide(
    verdicts: Mapping[GateId, Verdict],
    evidence: Mapping[GateId, tuple[str, ...]],
    waivers: Mapping[GateId, str],
) -> list[GateResult]:
    """Every gate's result in registry order; a waiver clears a failed, waivable gate only."""
    missing = [gate.value for gate in GATES if gate not in verdicts]
    if missing:
        raise MissingVerdict(f"no verdict for gate(s) {', '.join(missing)}")
    results = []
    for gate, spec in GATES.items():
        verdict = verdicts[gate]
        reason = waivers.get(gate) if spec.waivable and not verdict.passed else None
        results.append(
            GateResult(
                id=gate,
                title=spec.title,
                passed=verdict.passed,
                waived=reason is not None,
                waiver_reason=reason,
                detail=verdict.detail,
                evidence=evidence.get(gate, ()),
            )
        )
    return results


# --------------------------------------------------------------------------- pure gates


class _Malformed(ValueError):
    pass


def fail_closed(where: str) -> Callable[[Callable[..., Verdict]], Callable[..., Verdict]]:
    """A gate whose evidence is absent or lacks a field fails, naming the file and field."""

    def wrap(gate: Callable[..., Verdict]) -> Callable[..., Verdict]:
        def checked(*args: Any, **kwargs: Any) -> Verdict:
            try:
                return gate(*args, **kwargs)
            except _Malformed as exc:
                return Verdict(False, f"{where}: {exc}")

        checked.__name__ = gate.__name__
        checked.__doc__ = gate.__doc__
        return checked

    return wrap


def number(report: Mapping[str, Any] | None, *keys: str) -> float:
    """``report[k1][k2]...`` as a finite float, or :class:`_Malformed` naming the field."""
    if report is None:
        raise _Malformed("missing (has its stage run?)")
    value: Any = report
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            raise _Malformed(f"{'.'.join(keys[: depth + 1])}: missing")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Malformed(f"{'.'.join(keys)}: not a finite number ({value!r})")
    return float(value)


def at_most(name: str, value: float, limit_name: str, limit: float, spec: str = "g") -> Verdict:
    """Cleared when ``value <= limit``; the reason shows both, e.g. ``delta 1e-06 <= ...``."""
    cleared = value <= limit
    return Verdict(
        cleared, f"{name} {value:{spec}} {'<=' if cleared else '>'} {limit_name} {limit:g}"
    )


@fail_closed(PRIVACY_REPORT)
def epsilon_gate(privacy: Mapping[str, Any] | None, limits: Limits) -> Verdict:
    return at_most(
        "epsilon", number(privacy, "epsilon"), "policy.max_epsilon", limits.max_epsilon, ".3f"
    )


@fail_closed(PRIVACY_REPORT)
def delta_gate(privacy: Mapping[str, Any] | None, limits: Limits) -> Verdict:
    return at_most("delta", number(privacy, "delta"), "policy.max_delta", limits.max_delta)


def lifetime_budget_gate(spent: float | None, lifetime: float, problem: str | None) -> Verdict:
    """``spent``: the ledger's composed epsilon for the dataset; ``problem``: why it is unknown."""
    if problem is not None or spent is None:
        return Verdict(False, f"privacy ledger: {problem or 'no spend recorded for the dataset'}")
    return at_most("dataset budget spent", spent, "privacy.lifetime_epsilon", lifetime, ".3f")


@fail_closed(CHECKS_REPORT)
def critical_findings_gate(checks: Mapping[str, Any] | None) -> Verdict:
    if checks is None:
        raise _Malformed("missing (has its stage run?)")
    waived = checks.get("waived")
    if not isinstance(waived, Mapping):
        raise _Malformed("waived: missing")
    findings = [
        finding
        for key, value in checks.items()
        if key.endswith("findings") and isinstance(value, list)
        for finding in value
    ]
    if "findings" not in checks:
        raise _Malformed("findings: missing")
    critical = [f for f in findings if f.get("severity") == "critical"]
    blocking = sorted({str(f.get("type")) for f in critical if f.get("type") not in waived})
    if blocking:
        return Verdict(False, f"unwaived critical finding(s): {', '.join(blocking)}")
    waived_kinds = sorted({str(f.get("type")) for f in critical})
    tail = f"; waived in check: {', '.join(waived_kinds)}" if waived_kinds else ""
    return Verdict(True, f"{len(findings)} finding(s), none critical and unwaived{tail}")


@fail_closed(VALIDATION_REPORT)
def gx_suites_gate(
    validation: Mapping[str, Any] | None, checks: Mapping[str, Any] | None
) -> Verdict:
    if validation is None:
        raise _Malformed("missing (has its stage run?)")
    suites = validation.get("suites")
    if not isinstance(suites, list) or not suites:
        raise _Malformed("suites: missing or empty")
    waived = validation.get("waived") or {}
    failing = [
        str(s.get("suite"))
        for s in suites
        if not s.get("success") and s.get("dataset") not in waived
    ]
    expectations = (checks or {}).get("expectations")
    if not isinstance(expectations, Mapping) or not expectations:
        return Verdict(False, f"{CHECKS_REPORT}: expectations: missing (has check run?)")
    check_waived = (checks or {}).get("waived") or {}
    failing += [
        f"{comparison}:{kind}"
        for comparison, results in expectations.items()
        for kind, success in results.items()
        if not success and kind not in check_waived
    ]
    if failing:
        return Verdict(False, f"failing suite(s) or expectation(s): {', '.join(failing)}")
    evaluated = sum(int(s.get("evaluated", 0)) for s in suites)
    checked = sum(len(results) for results in expectations.values())
    return Verdict(
        True,
        f"{len(suites)} data suite(s), {evaluated} expectations, and {checked} leakage "
        f"expectations pass",
    )


@fail_closed(METRICS_REPORT)
def utility_gate(metrics: Mapping[str, Any] | None, limits: Limits) -> Verdict:
    """Accuracy must beat the majority-class baseline by a margin; ROC AUC must beat 0.5's."""
    accuracy = number(metrics, "accuracy")
    baseline = number(metrics, "baseline", "accuracy")
    auc = number(metrics, "roc_auc")
    lift = accuracy - baseline
    short = []
    if lift < limits.min_lift_over_baseline:
        short.append(
            f"accuracy {accuracy:.3f} is {lift:+.3f} over the majority-class baseline "
            f"{baseline:.3f} < policy.min_lift_over_baseline {limits.min_lift_over_baseline:g}"
        )
    if auc < limits.min_roc_auc:
        short.append(f"ROC AUC {auc:.3f} < policy.min_roc_auc {limits.min_roc_auc:g}")
    if short:
        return Verdict(False, "; ".join(short))
    return Verdict(
        True,
        f"accuracy {accuracy:.3f} is {lift:+.3f} over the majority-class baseline "
        f"{baseline:.3f} (>= {limits.min_lift_over_baseline:g}), ROC AUC {auc:.3f} >= "
        f"{limits.min_roc_auc:g}",
    )


@dataclass(frozen=True)
class SliceGap:
    attribute: str
    best: str
    worst: str
    gap: float
    # The spread of the same slices' majority-class accuracy: the gap the data already has.
    data_gap: float

    @property
    def over_data(self) -> float:
        return self.gap - self.data_gap


def slice_gaps(metrics: Mapping[str, Any] | None, min_rows: int) -> tuple[list[SliceGap], int]:
    """Per sensitive attribute, the accuracy gap among slices of at least ``min_rows`` rows.

    Returns the gaps (largest first) and how many slices were too small to count.
    """
    slices = (metrics or {}).get("slices")
    if not isinstance(slices, Mapping) or not slices:
        raise _Malformed("slices: missing or empty")
    gaps, small = [], 0
    for attribute, values in sorted(slices.items()):
        if not isinstance(values, Mapping):
            raise _Malformed(f"slices.{attribute}: not a mapping")
        sized, baseline = {}, {}
        for label in values:
            rows = number(metrics, "slices", attribute, label, "rows")
            if rows >= min_rows:
                sized[label] = number(metrics, "slices", attribute, label, "accuracy")
                baseline[label] = number(metrics, "slices", attribute, label, "baseline_accuracy")
            else:
                small += 1
        if len(sized) >= 2:
            best = max(sized, key=lambda label: sized[label])
            worst = min(sized, key=lambda label: sized[label])
            data_gap = max(baseline.values()) - min(baseline.values())
            gaps.append(
                SliceGap(
                    str(attribute), str(best), str(worst), sized[best] - sized[worst], data_gap
                )
            )
    return sorted(gaps, key=lambda g: -g.gap), small


@fail_closed(METRICS_REPORT)
def worst_slice_gap_gate(metrics: Mapping[str, Any] | None, limits: Limits) -> Verdict:
    """Per attribute, the model's accuracy gap within an absolute ceiling and within
    ``max_gap_over_data`` of the gap the data already has (the same slices' baselines)."""
    if metrics is None:
        raise _Malformed("missing (has its stage run?)")
    gaps, small = slice_gaps(metrics, limits.min_slice_rows)
    if not gaps:
        return Verdict(
            False, f"no sensitive attribute has two slices of >= {limits.min_slice_rows} rows"
        )
    worst = gaps[0]
    widest = max(gaps, key=lambda g: g.over_data)
    within = worst.gap <= limits.max_worst_slice_gap
    relative = widest.over_data <= limits.max_gap_over_data
    ignored = (
        f"; {small} slice(s) under policy.min_slice_rows {limits.min_slice_rows} not gated"
        if small
        else ""
    )
    return Verdict(
        within and relative,
        f"largest accuracy gap {worst.gap:.3f} on {worst.attribute} ({worst.best} vs "
        f"{worst.worst}) {'<=' if within else '>'} policy.max_worst_slice_gap "
        f"{limits.max_worst_slice_gap:g}; most over the data's own gap: {widest.attribute} "
        f"{widest.gap:.3f} vs {widest.data_gap:.3f} in the data ({widest.over_data:+.3f} "
        f"{'<=' if relative else '>'} policy.max_gap_over_data {limits.max_gap_over_data:g})"
        f"{ignored}",
    )


@fail_closed(METRICS_REPORT)
def empirical_privacy_gate(
    metrics: Mapping[str, Any] | None, privacy: Mapping[str, Any] | None
) -> Verdict:
    """The audit's lower bound may not exceed its run's accountant epsilon, and the audit
    must belong to the model in ``reports/privacy.json`` (same epsilon and delta)."""
    bound = number(metrics, "privacy_audit", "epsilon_lower_bound")
    epsilon = number(metrics, "privacy_audit", "accountant_epsilon")  # the audited run's
    evaluated = number(metrics, "privacy_audit", "production_epsilon")
    audited_delta = number(metrics, "privacy_audit", "delta")
    try:
        released, delta = number(privacy, "epsilon"), number(privacy, "delta")
    except _Malformed as exc:
        return Verdict(False, f"{PRIVACY_REPORT}: {exc}")
    if not math.isclose(evaluated, released, rel_tol=_SAME_EPSILON) or not math.isclose(
        audited_delta, delta, rel_tol=_SAME_EPSILON
    ):
        return Verdict(
            False,
            f"the evaluation saw a model of epsilon {evaluated:g}, delta {audited_delta:g}, but "
            f"{PRIVACY_REPORT} reports epsilon {released:g}, delta {delta:g} (stale evaluation)",
        )
    if bound > epsilon:
        return Verdict(
            False,
            f"empirical lower bound {bound:.3f} exceeds the accountant's epsilon {epsilon:.3f}: "
            f"the privacy guarantee does not hold as implemented",
        )
    return Verdict(True, f"empirical lower bound {bound:.3f} <= accountant epsilon {epsilon:.3f}")
