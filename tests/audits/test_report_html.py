"""The compliance page: self-contained, escaped, and saying only what compliance.json says."""

from __future__ import annotations

import html
import re

import pytest
from pydantic import ValidationError

from audits import gates as g
from audits.compliance import (
    AttestationSummary,
    AuditLogStatus,
    ComplianceReport,
    Documents,
    ManifestStatus,
    catalog_info,
    pending_signoffs,
    release_decision,
)
from audits.identity import AiActClassification, DataProtection, ModelIdentity
from audits.nist import load_catalog, map_catalog
from audits.report_html import render
from tests.audits.evidence import EVIL, POLICY_DOCS, calibration, metrics, provenance

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
    results = changes.get("gates") or g.decide(
        verdicts, {g.GateId.EPSILON: ("reports/privacy.json",)}, {}
    )
    catalog = load_catalog()
    rows = map_catalog(catalog, {})
    record = provenance()
    sample_metrics = changes.get("metrics", metrics(2.6690346, 1e-6))
    values = {
        "passed": all(r.cleared for r in results),
        "decision": release_decision(
            results,
            rows,
            required_roles=["privacy-officer", "model-owner"],
            required_attestations=["MEASURE 2.11"],
            metrics=sample_metrics,
        ),
        "model": ModelIdentity(**POLICY_DOCS["model"]),
        "data_protection": DataProtection(**POLICY_DOCS["data_protection"]),
        "ai_act_classification": AiActClassification(**POLICY_DOCS["ai_act_classification"]),
        "attestations": AttestationSummary(required=["MEASURE 2.11"], recorded=[]),
        "subject": {
            "dataset": record["name"],
            "model_sha256": "ef" * 32,
            "released_epoch": 3,
            "evidence_as_of": "2026-12-07T03:00:00Z",
        },
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
        "metrics": sample_metrics,
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
    assert "Release blocked: 1 of 11 gates failed (utility)" in page
    assert "ROC AUC 0.500 &lt; policy.min_roc_auc 0.65" in page
    for row in report.nist_ai_rmf:
        assert f">{row.id}</span>" in page
    assert 'href="privacy.json"' in page  # relative inside the pack (reports/)
    assert "2.6690" in page  # epsilon


def test_page_without_metrics_says_so() -> None:
    page = render(sample_report(metrics=None, calibration=[], failed={"utility": "missing"}))
    assert page.count("reports/metrics.json</code> is missing") == 3


def test_passed_must_agree_with_the_gates() -> None:
    with pytest.raises(ValidationError, match="passed must be true exactly when"):
        sample_report(failed={"epsilon": "epsilon 4 > 3"}, passed=True)


def visible_text(page: str) -> str:
    page = re.sub(r"<style>.*?</style>|<svg.*?</svg>", " ", page, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_page_opens_with_the_decision_and_never_says_passed_before_sign_off() -> None:
    page = render(sample_report())
    text = visible_text(page)
    order = [page.index(f'id="{anchor}"') for anchor in ("decision", "model", "gates", "nist")]
    assert order == sorted(order)
    assert text.index("Release decision") < text.index("Gate summary")
    headline = (
        "Not yet releasable: 11 of 11 gates cleared; waiting for sign-off by privacy-officer "
        "and model-owner; 1 required attestation(s) (MEASURE 2.11)"
    )
    assert headline in text
    assert "passed" not in text[: text.index("Gate summary")].lower()
    # What it waits for, by role and by subcategory, before any evidence.
    head = text[: text.index("Gate summary")]
    assert "sign-off by a privacy-officer" in head and "sign-off by a model-owner" in head
    assert "custodian attest 'MEASURE 2.11' --as NAME --note TEXT" in head
    # ... and who the model is for, and the law it falls under.
    for fact in (
        "whether a survey respondent reports any spending",
        "version 1.2.0",
        "data-team@example.invalid",
        "analysts of the survey team",
        "decisions about individuals",
        "high risk (Annex III 5(c))",
        "DPIA-2020-07",
        "five years after the study ends",
    ):
        assert fact in head, fact
    # A waived gate is listed with its reason up front, never hidden in the table.
    reason = "accepted by the privacy officer for the internal pilot"
    verdicts = {gate: g.Verdict(gate is not g.GateId.EPSILON, "x") for gate in g.GateId}
    waived = g.decide(verdicts, {}, {g.GateId.EPSILON: reason})
    text = visible_text(render(sample_report(gates=waived)))
    assert "(1 waived)" in text and f"Waived gates epsilon : {reason}" in text


def test_every_metric_sits_next_to_its_baseline_and_slices_carry_rates_and_intervals() -> None:
    text = visible_text(render(sample_report()))
    assert "accuracy 0.7741 0.7625 +0.0116" in text  # model, baseline, lift
    assert "roc_auc 0.7350 0.5000 +0.2350" in text
    # black = 0: base rate, accuracy with its interval, the baseline it fails to beat.
    assert "0 2428 0.816 0.804 [0.789, 0.820] 0.816 model below" in text
    assert "mixed (small) 6" in text
    assert "Accuracy gap 0.163 (the data's own: 0.278, so -0.115 over it)" in text
    assert "equalised-odds gap 0.190" in text
    assert "Intersections of two sensitive attributes" in text and "black & female" in text
    assert "6 of 2998 test rows hold fractional (imputed) values" in text
    assert (
        "2 slice(s) with accuracy below their majority-class baseline, 1 with the whole "
        "confidence interval below it: black=0 (0.804 < 0.816); female=1 (0.795 < 0.820)"
    ) in text


def test_links_resolve_inside_the_pack() -> None:
    page = render(sample_report())
    hrefs = re.findall(r'href="([^"]+)"', page)
    files = [h for h in hrefs if not h.startswith("#")]
    assert files and all(not h.startswith(("/", "..")) and ":" not in h for h in files)
    assert {"privacy.json", "metrics.json", "model_card.md"} <= set(files)
    anchors = {h[1:] for h in hrefs if h.startswith("#")}
    assert anchors <= set(re.findall(r'id="([^"]+)"', page))
    # What lies outside reports/ is named, not linked.
    assert '<code class="outside" title="kept in the project checkout, not in the pack">' in page
    assert 'href="data/' not in page and ".custodian/audit/log.jsonl</a>" not in page


def test_attestations_are_a_to_do_list_and_a_record() -> None:
    report = sample_report()
    text = visible_text(render(report))
    section = text[text.index("Attestations What the pipeline") :]
    assert f"To attest ({len(report.decision.attestations_open)})" in section
    assert "MEASURE 2.11 (required)" in section
    recorded = {
        "file": "attestations/GOVERN-2-2-olivia.dsse.json",
        "status": "counted",
        "subcategory": "GOVERN 2.2",
        "attester": "olivia",
        "role": "privacy-officer",
        "signed_at": "2026-12-01T10:00:00Z",
        "note": "training records checked",
    }
    summary = AttestationSummary(required=["MEASURE 2.11"], recorded=[recorded])
    text = visible_text(render(sample_report(attestations=summary)))
    assert "GOVERN 2.2 olivia privacy-officer 2026-12-01T10:00:00Z counted training records" in (
        text
    )


def test_training_chart_has_separate_axes_and_marks_the_released_epoch() -> None:
    page = render(sample_report())
    charts = re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL)
    losses = next(c for c in charts if "Training and validation loss" in c)
    spent = next(c for c in charts if "<title>Privacy spent</title>" in c)
    assert "epsilon" not in losses.replace("Privacy", "") and ">loss</text>" in losses
    assert ">epsilon</text>" in spent
    for chart in (losses, spent):
        assert 'stroke-dasharray="4 3"' in chart and ">released</text>" in chart


def test_the_to_do_list_holds_only_what_a_person_can_attest() -> None:
    failed = sample_report(failed={"utility": "lift -0.001 < 0.01"})
    todo = set(failed.decision.attestations_open)
    # MEASURE 2.1 is partial because its utility evidence failed, yet no attestation can
    # make up for that: it is not on the to-do list; the organisational rows are.
    assert "MEASURE 2.1" not in todo and "MAP 2.1" not in todo
    assert {"GOVERN 2.2", "MEASURE 2.11"} <= todo
