"""The compliance page: self-contained, escaped, and saying only what compliance.json says."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from audits import gates as g
from audits.compliance import (
    AuditLogStatus,
    ComplianceReport,
    Documents,
    ManifestStatus,
    catalog_info,
    pending_signoffs,
)
from audits.nist import load_catalog, map_catalog
from audits.report_html import render
from tests.audits.evidence import EVIL, calibration, metrics, provenance

# Anything a browser would fetch: src/href/action with a scheme or //, CSS url() and @import.
EXTERNAL = re.compile(
    r"""(?:src|href|action|data|poster)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)|url\(|@import""",
    re.IGNORECASE,
)


def sample_report(*, failed: dict[str, str] | None = None, **changes) -> ComplianceReport:
    failed = failed or {}
    verdicts = {
        gate: g.Verdict(gate.value not in failed, failed.get(gate.value, f"{gate.value} ok"))
        for gate in g.GateId
    }
    results = g.decide(verdicts, {g.GateId.EPSILON: ("reports/privacy.json",)}, {})
    catalog = load_catalog()
    rows = map_catalog(catalog, {})
    record = provenance()
    values = {
        "passed": all(r.cleared for r in results),
        "subject": {"dataset": record["name"], "model_sha256": "ef" * 32},
        "gates": results,
        "nist_catalog": catalog_info(catalog, rows),
        "nist_ai_rmf": rows,
        "datasets": [record | {"record": "data/ingested/survey.provenance.json"}],
        "validation": {
            "suites": [
                {
                    "suite": "survey.schema",
                    "dataset": "survey",
                    "success": True,
                    "evaluated": 9,
                    "successful": 9,
                }
            ]
        },
        "findings": [
            {
                "split": "test",
                "type": "pii",
                "severity": "warning",
                "count": 1,
                "detail": f"a value {EVIL}",
            }
        ],
        "privacy": {"epsilon": 2.6690346, "delta": 1e-6, "accountant": "prv", "steps": 336},
        "ledger": {"spent_epsilon": 2.669, "lifetime_epsilon": 10.0, "runs": 1},
        "metrics": metrics(2.6690346, 1e-6),
        "calibration": calibration(),
        "training_curve": [
            {"epoch": e, "train_loss": 0.6 - e / 20, "val_loss": 0.55 - e / 30, "epsilon": e / 2}
            for e in range(1, 6)
        ],
        "audit_log": AuditLogStatus(
            path=".custodian/audit/log.jsonl", verified=True, summary="intact", entries=12
        ),
        "manifest": ManifestStatus(
            path="reports/manifest.json",
            sha256="12" * 32,
            files=54,
            git_commit=None,
            dvc_lock_sha256=None,
            differences=[],
        ),
        "documents": Documents(
            model_card="reports/model_card.md",
            datasheets={"survey": "reports/datasheets/survey.md"},
            croissant={"survey": "reports/croissant/survey.json"},
        ),
        "signoffs": pending_signoffs(),
    }
    return ComplianceReport(**(values | changes))


def test_page_is_self_contained_and_escapes_metadata() -> None:
    page = render(sample_report())
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "evil.invalid" in page  # shown as text ...
    assert '<img src="http://evil.invalid' not in page  # ... never as markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<svg") >= 3  # training curve, reliability diagram, slice bars
    assert "@media print" in page


def test_page_names_every_gate_and_subcategory() -> None:
    report = sample_report(failed={"utility": "ROC AUC 0.500 < policy.min_roc_auc 0.65"})
    page = render(report)
    assert "Release gates FAILED: 10 of 11 cleared" in page
    assert "ROC AUC 0.500 &lt; policy.min_roc_auc 0.65" in page
    for row in report.nist_ai_rmf:
        assert f">{row.id}</span>" in page
    assert 'href="../reports/privacy.json"' in page
    assert "2.6690" in page  # epsilon


def test_page_without_metrics_says_so() -> None:
    page = render(sample_report(metrics=None, calibration=[], failed={"utility": "missing"}))
    assert page.count("reports/metrics.json</code> is missing") == 3


def test_passed_must_agree_with_the_gates() -> None:
    with pytest.raises(ValidationError, match="passed must be true exactly when"):
        sample_report(failed={"epsilon": "epsilon 4 > 3"}, passed=True)
