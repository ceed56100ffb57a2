"""Each release gate refuses for its own reason, fails closed on missing evidence, and waives."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from audits import gates as g
from custodian.params import PolicyParams
from tests.audits.evidence import POLICY_DOCS, metrics

LIMITS = g.Limits(
    max_epsilon=3.0,
    max_delta=1e-5,
    min_lift_over_baseline=0.01,
    min_roc_auc=0.65,
    max_worst_slice_gap=0.2,
    max_gap_over_data=0.05,
    min_slice_rows=30,
)
PRIVACY = {"epsilon": 2.669, "delta": 1e-6}
CHECKS = {
    "findings": [{"type": "near_duplicate", "severity": "warning", "count": 4}],
    "val_findings": [],
    "waived": {},
    "expectations": {"train_vs_test": {"near_duplicate": True, "group_leakage": True}},
}
VALIDATION = {
    "suites": [{"suite": "d.schema", "dataset": "d", "success": True, "evaluated": 3}],
    "waived": {},
}


def good_metrics() -> dict:
    return metrics(PRIVACY["epsilon"], PRIVACY["delta"])


def test_the_default_evidence_passes_every_pure_gate() -> None:
    m = good_metrics()
    for verdict in (
        g.epsilon_gate(PRIVACY, LIMITS),
        g.delta_gate(PRIVACY, LIMITS),
        g.lifetime_budget_gate(2.669, 10.0, None),
        g.critical_findings_gate(CHECKS),
        g.gx_suites_gate(VALIDATION, CHECKS),
        g.utility_gate(m, LIMITS),
        g.worst_slice_gap_gate(m, LIMITS),
        g.empirical_privacy_gate(m, PRIVACY),
    ):
        assert verdict.passed, verdict.detail


def test_epsilon_and_delta_over_the_limits() -> None:
    verdict = g.epsilon_gate({"epsilon": 3.2, "delta": 1e-6}, LIMITS)
    assert not verdict.passed and verdict.detail == "epsilon 3.200 > policy.max_epsilon 3"
    verdict = g.delta_gate({"epsilon": 1.0, "delta": 1e-4}, LIMITS)
    assert not verdict.passed and "delta 0.0001 > policy.max_delta 1e-05" in verdict.detail


def test_lifetime_budget_exceeded_or_ledger_unreadable() -> None:
    over = g.lifetime_budget_gate(10.5, 10.0, None)
    assert not over.passed and "10.500 > privacy.lifetime_epsilon 10" in over.detail
    broken = g.lifetime_budget_gate(None, 10.0, "line 3: chain broken")
    assert not broken.passed and "chain broken" in broken.detail


def test_critical_finding_fails_unless_waived_in_check() -> None:
    checks = copy.deepcopy(CHECKS)
    checks["val_findings"].append({"type": "group_leakage", "severity": "critical", "count": 9})
    verdict = g.critical_findings_gate(checks)
    assert not verdict.passed and "group_leakage" in verdict.detail
    checks["waived"] = {"group_leakage": "reviewed: the ids are household ids"}
    verdict = g.critical_findings_gate(checks)
    assert verdict.passed and "waived in check: group_leakage" in verdict.detail


def test_failing_gx_suite_or_leakage_expectation() -> None:
    validation = copy.deepcopy(VALIDATION)
    validation["suites"][0]["success"] = False
    verdict = g.gx_suites_gate(validation, CHECKS)
    assert not verdict.passed and "d.schema" in verdict.detail
    validation["waived"] = {"d": "known: a column range widened upstream"}
    assert g.gx_suites_gate(validation, CHECKS).passed
    checks = copy.deepcopy(CHECKS)
    checks["expectations"]["train_vs_test"]["group_leakage"] = False
    verdict = g.gx_suites_gate(VALIDATION, checks)
    assert not verdict.passed and "train_vs_test:group_leakage" in verdict.detail


def test_utility_must_beat_the_majority_class_baseline() -> None:
    m = good_metrics()
    assert "+0.012 over the majority-class baseline 0.762" in g.utility_gate(m, LIMITS).detail
    # 0.70 cleared the old bare floor of 0.70, yet a constant predictor scores 0.7625 here.
    m["accuracy"] = 0.70
    verdict = g.utility_gate(m, LIMITS)
    assert not verdict.passed
    assert "accuracy 0.700 is -0.062 over the majority-class baseline 0.762 < policy." in (
        verdict.detail
    )
    # The majority-class predictor itself: no lift, and its AUC of 0.5.
    m = good_metrics() | {"accuracy": 0.7625, "roc_auc": 0.5}
    verdict = g.utility_gate(m, LIMITS)
    assert not verdict.passed and "ROC AUC 0.500 < policy.min_roc_auc 0.65" in verdict.detail
    del m["baseline"]
    assert g.utility_gate(m, LIMITS).detail == "reports/metrics.json: baseline: missing"


def test_worst_slice_gap_ignores_only_slices_too_small_to_compare() -> None:
    m = good_metrics()
    verdict = g.worst_slice_gap_gate(m, LIMITS)
    # The 6-row slice (accuracy 0.17) is listed but not gated; black 0 vs 1 is.
    assert verdict.passed
    assert "0.163 on black (0 vs 1)" in verdict.detail and "1 slice(s) under" in verdict.detail
    strict = g.Limits(**{**LIMITS.__dict__, "max_worst_slice_gap": 0.1})
    verdict = g.worst_slice_gap_gate(m, strict)
    assert not verdict.passed and "> policy.max_worst_slice_gap 0.1" in verdict.detail
    every_row = g.Limits(**{**LIMITS.__dict__, "min_slice_rows": 1})
    assert not g.worst_slice_gap_gate(m, every_row).passed


def test_slice_gap_is_held_against_the_gap_the_data_already_has() -> None:
    m = good_metrics()
    # black: the model's gap 0.163 is narrower than its groups' base rates give (0.278);
    # xage's 0.116 comes closest to its baselines' spread (0.82 - 0.70 = 0.12).
    verdict = g.worst_slice_gap_gate(m, LIMITS)
    assert verdict.passed
    assert "most over the data's own gap: xage 0.116 vs 0.120 in the data (-0.004 <=" in (
        verdict.detail
    )
    tight = g.Limits(**{**LIMITS.__dict__, "max_gap_over_data": 0.0})
    assert g.worst_slice_gap_gate(m, tight).passed
    m["slices"]["xage"]["q4"]["accuracy"] = 0.85
    verdict = g.worst_slice_gap_gate(m, tight)
    assert not verdict.passed and "(+0.015 > policy.max_gap_over_data 0)" in verdict.detail
    # A model that widens black's gap past the data's fails even under the absolute ceiling.
    m["slices"]["black"]["1"]["accuracy"] = 0.50
    m["slices"]["black"]["1"]["baseline_accuracy"] = 0.78
    loose = g.Limits(**{**LIMITS.__dict__, "max_worst_slice_gap": 0.5})
    verdict = g.worst_slice_gap_gate(m, loose)
    assert not verdict.passed and "black 0.304 vs 0.036 in the data" in verdict.detail


def test_empirical_bound_above_the_accountant_or_stale_audit() -> None:
    m = good_metrics()
    m["privacy_audit"]["epsilon_lower_bound"] = 2.9
    verdict = g.empirical_privacy_gate(m, PRIVACY)
    assert not verdict.passed and "does not hold as implemented" in verdict.detail
    m = good_metrics()
    m["privacy_audit"]["production_epsilon"] = 1.5
    verdict = g.empirical_privacy_gate(m, PRIVACY)
    assert not verdict.passed and "stale evaluation" in verdict.detail
    # The audit run is a separate run: its own epsilon may differ from the released
    # model's (early stopping); the bound is held against the audited run's epsilon.
    m = good_metrics()
    m["privacy_audit"]["accountant_epsilon"] = 2.95
    m["privacy_audit"]["epsilon_lower_bound"] = 2.9
    assert g.empirical_privacy_gate(m, PRIVACY).passed


@pytest.mark.parametrize(
    "gate",
    [g.utility_gate, g.worst_slice_gap_gate, lambda m, _: g.empirical_privacy_gate(m, PRIVACY)],
)
def test_missing_metrics_fail_closed(gate) -> None:
    verdict = gate(None, LIMITS)
    assert not verdict.passed
    assert verdict.detail.startswith("reports/metrics.json: missing")


def test_malformed_evidence_fails_naming_the_field() -> None:
    m = good_metrics()
    m["roc_auc"] = "high"
    assert g.utility_gate(m, LIMITS).detail == (
        "reports/metrics.json: roc_auc: not a finite number ('high')"
    )
    del m["privacy_audit"]["epsilon_lower_bound"]
    assert g.empirical_privacy_gate(m, PRIVACY).detail == (
        "reports/metrics.json: privacy_audit.epsilon_lower_bound: missing"
    )
    assert (
        g.epsilon_gate({"delta": 1e-6}, LIMITS).detail == "reports/privacy.json: epsilon: missing"
    )
    assert not g.critical_findings_gate({"waived": {}}).passed


def verdicts(**failed: str) -> dict[g.GateId, g.Verdict]:
    return {
        gate: g.Verdict(gate.value not in failed, failed.get(gate.value, "ok")) for gate in g.GateId
    }


def test_a_waiver_clears_a_failed_gate_and_keeps_its_reason() -> None:
    reason = "the privacy officer accepts epsilon 3.2 for this research release"
    results = g.decide(verdicts(epsilon="epsilon 3.2 > 3"), {}, {g.GateId.EPSILON: reason})
    epsilon = next(r for r in results if r.id is g.GateId.EPSILON)
    assert not epsilon.passed and epsilon.waived and epsilon.waiver_reason == reason
    assert epsilon.cleared and all(r.cleared for r in results)
    # A waiver for a gate that passed is not used.
    results = g.decide(verdicts(), {}, {g.GateId.EPSILON: reason})
    assert not any(r.waived for r in results)


def test_integrity_gates_cannot_be_waived() -> None:
    reason = "someone would like to ship anyway, please"
    results = g.decide(verdicts(audit_log="tampered"), {}, {g.GateId.AUDIT_LOG: reason})
    log = next(r for r in results if r.id is g.GateId.AUDIT_LOG)
    assert not log.cleared and not log.waived
    base = {
        "intended_use": "research",
        "allowed_licenses": ["MIT"],
        "max_epsilon": 3,
        "max_delta": 1e-5,
        "min_lift_over_baseline": 0.01,
        "min_roc_auc": 0.65,
        "max_worst_slice_gap": 0.2,
        "max_gap_over_data": 0.1,
        "min_slice_rows": 30,
        "model": POLICY_DOCS["model"],
        "data_protection": POLICY_DOCS["data_protection"],
        "ai_act_classification": POLICY_DOCS["ai_act_classification"],
    }
    with pytest.raises(ValidationError, match="artifacts cannot be waived"):
        PolicyParams(**base, gate_waivers={"artifacts": reason})
    with pytest.raises(ValidationError, match="gate_waivers"):
        PolicyParams(**base, gate_waivers={"epsilonn": reason})
    with pytest.raises(ValidationError, match="at least 10 characters"):
        PolicyParams(**base, gate_waivers={"epsilon": "ok"})
    assert PolicyParams(**base, gate_waivers={"epsilon": reason}).limits().max_epsilon == 3


def test_every_gate_needs_a_verdict() -> None:
    partial = verdicts()
    del partial[g.GateId.UTILITY]
    with pytest.raises(g.MissingVerdict, match="utility"):
        g.decide(partial, {}, {})
