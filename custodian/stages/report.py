"""The report stage: the compliance pack a reviewer reads and signs.

The procedure, top to bottom: read the evidence the stages wrote; decide every
release gate against ``policy`` (a waiver clears a failed gate and is logged);
write the model card, a datasheet and Croissant metadata per dataset; map the
72 NIST AI RMF subcategories onto the evidence that exists and passed; write
``compliance.json`` and the page rendered from it. A failed, unwaived gate
exits 1 after the pack is written, so the page can say why.

``audits/`` does the deciding and the writing from plain values; this module
reads files, asks the other packages what only they know (licenses, the privacy
ledger, the audit log, the manifest) and passes the answers down.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audits import gates as g
from audits.cards import ModelFacts, datasheet, model_card
from audits.compliance import (
    AttestationSummary,
    AuditLogStatus,
    ComplianceReport,
    Documents,
    ManifestStatus,
    catalog_info,
    fairness_complete,
    pending_signoffs,
    release_decision,
    utility_complete,
)
from audits.croissant import CroissantFacts, croissant
from audits.files import atomic_directory, atomic_write_json, atomic_write_text
from audits.manifest import sha256_file
from audits.nist import Evidence, EvidenceKind, load_catalog, map_catalog
from audits.report_binding import ReportBinding
from audits.report_html import render
from custodian.outputs import (
    ChecksReport,
    MetricsReport,
    PrivacyReport,
    SplitSummary,
    StageOutput,
    ValidationReport,
)
from custodian.params import PolicyParams
from custodian.project import Project
from custodian.services import trail
from custodian.services.attest import review_project_attestations
from custodian.services.audit_log import verify_log
from custodian.services.datasets import license_policy, load_record
from custodian.services.manifests import artifact_differences, load_manifest
from governance.errors import GovernanceError, InputError

MODEL_CARD = "model_card.md"
DATASHEETS = "datasheets"
CROISSANT = "croissant"


@dataclass(frozen=True)
class Inputs:
    """Where each stage's evidence is (paths as given, relative to the project root)."""

    ingested: Path
    splits: Path
    models: Path
    validation: Path
    checks: Path
    privacy: Path
    curve: Path
    manifest: Path
    metrics: Path
    calibration: Path


@dataclass(frozen=True)
class Loaded:
    """The evidence, parsed. ``metrics`` and ``calibration`` may be missing: gates fail closed."""

    datasets: dict[str, dict[str, Any]]  # ingested provenance records by name
    splits: dict[str, dict[str, Any]]  # split provenance records by split name
    split: dict[str, Any]
    model: dict[str, Any]
    validation: dict[str, Any]
    checks: dict[str, Any]
    privacy: dict[str, Any]
    curve: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    calibration: list[dict[str, Any]]


def run(policy: PolicyParams, lifetime: float, inputs: Inputs, out: Path) -> ComplianceReport:
    """Decide the gates, write the pack under ``out``; the report written (even if a gate
    failed: :func:`require_passed` says so afterwards)."""
    project = Project.discover()
    loaded = _load(inputs)

    log_status = _audit_log_status(project)
    manifest_status = _manifest_status(project, inputs.manifest)
    verdicts = _verdicts(project, loaded, policy, lifetime, log_status, manifest_status)
    gate_evidence = _gate_evidence(project, inputs, loaded)
    results = g.decide(verdicts, gate_evidence, policy.gate_waivers)
    _log_decisions(results)

    ledger = _ledger_summary(project, loaded.privacy, lifetime)
    documents = _write_documents(project, out, inputs, loaded, policy, ledger)
    evidence = _evidence(project, inputs, loaded, results, documents)
    catalog = load_catalog()
    attestations = review_project_attestations(project, policy.required_attestations, catalog)
    rows = map_catalog(catalog, evidence, attestations.attested)
    findings = _findings(loaded.checks)
    report = ComplianceReport(
        passed=all(result.cleared for result in results),
        decision=release_decision(
            results,
            rows,
            required_roles=[role.value for role in policy.required_signoff_roles],
            required_attestations=policy.required_attestations,
            metrics=loaded.metrics,
            findings=findings,
        ),
        model=policy.model,
        data_protection=policy.data_protection,
        ai_act_classification=policy.ai_act_classification,
        attestations=AttestationSummary(
            required=list(policy.required_attestations),
            recorded=[check.model_dump(mode="json") for check in attestations.checks],
        ),
        subject=_subject(project, inputs, loaded, manifest_status, log_status),
        gates=results,
        nist_catalog=catalog_info(catalog, rows),
        nist_ai_rmf=rows,
        datasets=_dataset_summaries(project, inputs, loaded),
        validation=loaded.validation,
        findings=findings,
        privacy=_privacy_with_ledger(loaded.privacy, ledger),
        ledger=ledger,
        metrics=loaded.metrics,
        calibration=loaded.calibration,
        training_curve=loaded.curve,
        audit_log=log_status,
        manifest=manifest_status,
        documents=documents,
        signoffs=pending_signoffs(),
    )
    atomic_write_json(out / "compliance.json", report.model_dump(mode="json"))
    atomic_write_text(out / "compliance.html", render(report, pack=_relative(project, out)))
    pack = (out / "compliance.json", out / "compliance.html")
    bind_report(project, inputs.manifest, pack, report.passed)

    return report


def require_passed(report: ComplianceReport, out: Path) -> None:
    """GatesFailed naming every gate that failed and was not waived."""
    failed = [r for r in report.gates if not r.cleared]
    if failed:
        raise g.GatesFailed(
            f"{len(failed)} release gate(s) failed: {', '.join(r.id.value for r in failed)}; "
            f"see {out / 'compliance.html'}"
        )


# --------------------------------------------------------------------------- reading


def _json(path: Path, *, required: bool = True) -> Any:
    if not path.is_file():
        if required:
            raise InputError(f"{path}: file not found (has its stage run?)")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({type(exc).__name__})") from None


def _load(inputs: Inputs) -> Loaded:
    datasets = {
        record.name: record.to_json()
        for record in map(load_record, sorted(inputs.ingested.glob("*.provenance.json")))
    }
    if not datasets:
        raise InputError(f"{inputs.ingested}: no *.provenance.json (run the ingest stage)")
    splits = {
        path.name.removesuffix(".provenance.json"): load_record(path).to_json()
        for path in sorted(inputs.splits.glob("*.provenance.json"))
    }
    for name in ("train", "test"):
        if name not in splits:
            raise InputError(f"{inputs.splits}/{name}.provenance.json: file not found")
    # Each stage output parsed through its model (a malformed one is one InputError naming
    # the file and field), then handed to audits/ as the plain JSON it was.
    metrics = _parsed(MetricsReport, inputs.metrics) if inputs.metrics.is_file() else None
    calibration = _json(inputs.calibration, required=False) or []
    _check_calibration(inputs, calibration)
    return Loaded(
        datasets=datasets,
        splits=splits,
        split=_parsed(SplitSummary, inputs.splits / "split.json"),
        model=_json(inputs.models / "model.json"),
        validation=_parsed(ValidationReport, inputs.validation),
        checks=_parsed(ChecksReport, inputs.checks),
        privacy=_parsed(PrivacyReport, inputs.privacy),
        curve=_json(inputs.curve),
        metrics=metrics,
        calibration=calibration,
    )


def _parsed(model: type[StageOutput], path: Path) -> dict[str, Any]:
    return model.read(path).model_dump(mode="json")


def _check_calibration(inputs: Inputs, calibration: Any) -> None:
    """The calibration bins the page draws (a DVC plot, a list rather than a model)."""
    if not isinstance(calibration, list):
        raise InputError(f"{inputs.calibration}: not a list of bins")
    for index, row in enumerate(calibration):
        numbers = isinstance(row, dict) and all(
            isinstance(row.get(k), int | float) and not isinstance(row.get(k), bool)
            for k in ("confidence", "accuracy", "count")
        )
        if not numbers:
            raise InputError(
                f"{inputs.calibration}: [{index}]: needs numeric confidence, accuracy and count"
            )


# --------------------------------------------------------------------------- gates


def _verdicts(
    project: Project,
    loaded: Loaded,
    policy: PolicyParams,
    lifetime: float,
    log_status: AuditLogStatus,
    manifest_status: ManifestStatus,
) -> dict[g.GateId, g.Verdict]:
    limits = policy.limits()
    differences = manifest_status.differences
    return {
        g.GateId.EPSILON: g.epsilon_gate(loaded.privacy, limits),
        g.GateId.DELTA: g.delta_gate(loaded.privacy, limits),
        g.GateId.LIFETIME_BUDGET: _lifetime_verdict(project, loaded.privacy, lifetime),
        g.GateId.CRITICAL_FINDINGS: g.critical_findings_gate(loaded.checks),
        g.GateId.GX_SUITES: g.gx_suites_gate(loaded.validation, loaded.checks),
        g.GateId.LICENSES: _license_verdict(loaded, policy),
        g.GateId.UTILITY: g.utility_gate(loaded.metrics, limits),
        g.GateId.WORST_SLICE_GAP: g.worst_slice_gap_gate(loaded.metrics, limits),
        g.GateId.EMPIRICAL_PRIVACY: g.empirical_privacy_gate(loaded.metrics, loaded.privacy),
        g.GateId.AUDIT_LOG: g.Verdict(log_status.verified, log_status.summary),
        g.GateId.ARTIFACTS: g.Verdict(
            not differences,
            f"{manifest_status.files} files and dvc.lock match {manifest_status.path}"
            if not differences
            else f"{len(differences)} difference(s): {'; '.join(differences[:5])}",
        ),
    }


def _lifetime_verdict(project: Project, privacy: Mapping[str, Any], lifetime: float) -> g.Verdict:
    # Imported here: the ledger pulls in Opacus and torch.
    from privacy.accounting import AccountantKind
    from privacy.errors import PrivacyError
    from privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(project.privacy_ledger_path)
    try:
        ledger.verify()
        spent = ledger.spent(
            str(privacy["dataset_sha256"]),
            float(privacy["delta"]),
            AccountantKind.parse(str(privacy["accountant"])),
            privacy.get("population"),  # the population's spend, every dataset of it
        )
    except (PrivacyError, KeyError, ValueError) as exc:
        return g.lifetime_budget_gate(None, lifetime, f"{ledger.path}: {exc}")
    return g.lifetime_budget_gate(spent, lifetime, None)


def _license_verdict(loaded: Loaded, policy: PolicyParams) -> g.Verdict:
    records = [*loaded.datasets.values(), *loaded.splits.values()]
    licenses = license_policy(policy)
    refused = []
    for record in records:
        try:
            licenses.obligations(record["license"], record["name"])
        except GovernanceError as exc:
            refused.append(str(exc))
    if refused:
        return g.Verdict(False, "; ".join(refused))
    licenses = sorted({str(record["license"]) for record in records})
    return g.Verdict(
        True,
        f"{len(records)} dataset record(s) under {', '.join(licenses)}, allowed for "
        f"{policy.intended_use.value} use",
    )


def _audit_log_status(project: Project) -> AuditLogStatus:
    log = project.audit_log()
    report, failure, _ = verify_log(project, log)
    head = report.checkpoint
    return AuditLogStatus(
        path=_relative(project, log.path),
        verified=failure is None,
        summary=failure or report.summary(),
        entries=report.entries,
        tree_size=head.tree_size if head else None,
        root_hash=head.root_hash if head else None,
        signed_at=head.time if head else None,
    )


def _manifest_status(project: Project, path: Path) -> ManifestStatus:
    manifest = load_manifest(path)
    differences = artifact_differences(project, manifest, path)
    return ManifestStatus(
        path=_relative(project, path),
        sha256=sha256_file(path),
        files=len(manifest.files),
        git_commit=manifest.git_commit,
        dvc_lock_sha256=manifest.dvc_lock_sha256,
        differences=[str(d) for d in differences],
    )


def _gate_evidence(project: Project, inputs: Inputs, loaded: Loaded) -> dict[g.GateId, tuple]:
    rel = _rel(project)
    records = _provenance_paths(project, inputs)
    metrics = (rel(inputs.metrics),) if loaded.metrics is not None else ()
    return {
        g.GateId.EPSILON: (rel(inputs.privacy),),
        g.GateId.DELTA: (rel(inputs.privacy),),
        g.GateId.LIFETIME_BUDGET: (_relative(project, project.privacy_ledger_path),),
        g.GateId.CRITICAL_FINDINGS: (rel(inputs.checks),),
        g.GateId.GX_SUITES: (rel(inputs.validation), rel(inputs.checks)),
        g.GateId.LICENSES: (*records, "params.yaml"),
        g.GateId.UTILITY: metrics,
        g.GateId.WORST_SLICE_GAP: metrics,
        g.GateId.EMPIRICAL_PRIVACY: (*metrics, rel(inputs.privacy)),
        g.GateId.AUDIT_LOG: (_relative(project, project.audit_log_path),),
        g.GateId.ARTIFACTS: (rel(inputs.manifest),),
    }


def bind_report(project: Project, manifest: Path, written: tuple[Path, ...], passed: bool) -> None:
    """Log what this run wrote and for which manifest, so nobody can swap it unnoticed."""
    files = {_relative(project, path): sha256_file(path) for path in written}
    built_for = {_relative(project, manifest): sha256_file(manifest)} if manifest.is_file() else {}
    active = trail.current()
    active.record_outputs(files)
    active.decision(ReportBinding(manifest=built_for, files=files, passed=passed).details())


def _log_decisions(results: list[g.GateResult]) -> None:
    """Waived gates are waivers in the audit log; the verdicts are one decision event."""
    active = trail.current()
    for result in results:
        if result.waived and result.waiver_reason is not None:
            active.waiver(
                f"gate:{result.id.value}", result.waiver_reason, {"detail": result.detail}
            )
    active.decision(
        {
            "release_gates": {
                r.id.value: "passed" if r.passed else "waived" if r.waived else "failed"
                for r in results
            },
            "passed": all(r.cleared for r in results),
        }
    )


# --------------------------------------------------------------------------- documents


def _write_documents(
    project: Project,
    out: Path,
    inputs: Inputs,
    loaded: Loaded,
    policy: PolicyParams,
    ledger: Mapping[str, Any],
) -> Documents:
    trained = str(loaded.split.get("dataset"))
    if trained not in loaded.datasets:
        raise InputError(f"{inputs.splits / 'split.json'}: dataset {trained!r} was not ingested")
    facts = ModelFacts(
        dataset=loaded.datasets[trained],
        train=loaded.splits["train"],
        test=loaded.splits["test"],
        split=loaded.split,
        model=loaded.model,
        model_sha256=sha256_file(inputs.models / "model.safetensors"),
        privacy=loaded.privacy,
        metrics=loaded.metrics,
        checks=loaded.checks,
        intended_use=policy.intended_use.value,
        git_commit=project.git_commit(),
        identity=policy.model,
        data_protection=policy.data_protection,
        classification=policy.ai_act_classification,
        spent_epsilon=_spent(ledger),
        lifetime_epsilon=float(ledger["lifetime_epsilon"]),
    )
    atomic_write_text(out / MODEL_CARD, model_card(facts))
    sheets, metadata = {}, {}
    with (
        atomic_directory(out / DATASHEETS) as sheet_dir,
        atomic_directory(out / CROISSANT) as croissant_dir,
    ):
        for name, record in loaded.datasets.items():
            csv = inputs.ingested / f"{name}.csv"
            content_url = os.path.relpath(csv.resolve(), (out / CROISSANT).resolve())
            metadata[name] = _relative(project, out / CROISSANT / f"{name}.json")
            sheets[name] = _relative(project, out / DATASHEETS / f"{name}.md")
            facts = (
                CroissantFacts(
                    data_protection=policy.data_protection,
                    metrics=loaded.metrics,
                    spent_epsilon=_spent(ledger),
                    lifetime_epsilon=float(ledger["lifetime_epsilon"]),
                    delta=loaded.privacy.get("delta"),
                )
                if name == trained
                else None
            )
            atomic_write_json(croissant_dir / f"{name}.json", croissant(record, content_url, facts))
            split = loaded.split if name == trained else None
            atomic_write_text(
                sheet_dir / f"{name}.md",
                datasheet(
                    record,
                    validation=loaded.validation,
                    split=split,
                    croissant_path=metadata[name],
                    protection=policy.data_protection if name == trained else None,
                ),
            )
    return Documents(
        model_card=_relative(project, out / MODEL_CARD), datasheets=sheets, croissant=metadata
    )


# --------------------------------------------------------------------------- the NIST map


def _evidence(
    project: Project,
    inputs: Inputs,
    loaded: Loaded,
    results: list[g.GateResult],
    documents: Documents,
) -> dict[EvidenceKind, Evidence]:
    """Each kind of evidence: its files, and whether it passed (its gates, or that it parsed)."""
    rel = _rel(project)
    passed_by_kind: dict[EvidenceKind, bool] = {}
    for result in results:
        kind = g.GATES[result.id].evidence
        passed_by_kind[kind] = passed_by_kind.get(kind, True) and result.passed
    metrics = loaded.metrics or {}
    files: dict[EvidenceKind, tuple[list[str], bool]] = {
        EvidenceKind.PROVENANCE: (_provenance_paths(project, inputs), True),
        EvidenceKind.LICENSES: ([*_provenance_paths(project, inputs), "params.yaml"], True),
        EvidenceKind.DATA_VALIDATION: ([rel(inputs.validation), rel(inputs.checks)], True),
        EvidenceKind.LEAKAGE_CHECKS: ([rel(inputs.checks)], True),
        EvidenceKind.PRIVACY_ACCOUNTING: ([rel(inputs.privacy)], True),
        EvidenceKind.PRIVACY_BUDGET: ([_relative(project, project.privacy_ledger_path)], True),
        EvidenceKind.EMPIRICAL_PRIVACY: ([rel(inputs.metrics)], True),
        EvidenceKind.UTILITY: ([rel(inputs.metrics)], utility_complete(metrics)),
        EvidenceKind.CALIBRATION: (
            [rel(inputs.metrics), rel(inputs.calibration)],
            isinstance((metrics.get("calibration") or {}).get("ece"), int | float),
        ),
        EvidenceKind.FAIRNESS: ([rel(inputs.metrics)], fairness_complete(metrics)),
        EvidenceKind.ROBUSTNESS: ([rel(inputs.metrics)], bool(metrics.get("robustness"))),
        EvidenceKind.TRAINING_RECORD: (
            [rel(inputs.models / "model.json"), rel(inputs.privacy), rel(inputs.curve)],
            True,
        ),
        EvidenceKind.AUDIT_LOG: ([_relative(project, project.audit_log_path)], True),
        EvidenceKind.MANIFEST: ([rel(inputs.manifest)], True),
        EvidenceKind.POLICY: (["params.yaml"], True),
        EvidenceKind.MODEL_CARD: ([documents.model_card], True),
        EvidenceKind.DATASHEETS: (
            [*documents.datasheets.values(), *documents.croissant.values()],
            True,
        ),
    }
    evidence = {}
    for kind, (paths, complete) in files.items():
        gate_passed = passed_by_kind.get(kind, True)
        detail = "its gate failed" if not gate_passed else "" if complete else "incomplete"
        evidence[kind] = Evidence.at(
            project.root, kind, paths, passed=complete and gate_passed, detail=detail
        )
    return evidence


# --------------------------------------------------------------------------- summaries


def _subject(
    project: Project,
    inputs: Inputs,
    loaded: Loaded,
    manifest: ManifestStatus,
    log: AuditLogStatus,
) -> dict[str, Any]:
    return {
        "dataset": loaded.split.get("dataset"),
        # The evidence's date: when the audit log that records it was last signed.
        "evidence_as_of": log.signed_at,
        "released_epoch": loaded.privacy.get("best_epoch"),
        "dataset_sha256": loaded.privacy.get("dataset_sha256"),
        "model": _relative(project, inputs.models / "model.safetensors"),
        "model_sha256": sha256_file(inputs.models / "model.safetensors"),
        "git_commit": manifest.git_commit,
        "manifest_sha256": manifest.sha256,
    }


def _dataset_summaries(project: Project, inputs: Inputs, loaded: Loaded) -> list[dict[str, Any]]:
    keys = (
        "name",
        "title",
        "source",
        "source_version",
        "citation",
        "license",
        "obligations",
        "rows",
        "sha256",
        "retrieved_at",
        "pii_categories",
        "parents",
        "produced_by",
        "intended_use",
        "restrictions",
    )
    summaries = []
    for directory, records in ((inputs.ingested, loaded.datasets), (inputs.splits, loaded.splits)):
        for file_name, record in records.items():
            summary = {key: record.get(key) for key in keys}
            summary["record"] = _relative(project, directory / f"{file_name}.provenance.json")
            summaries.append(summary)
    return summaries


def _findings(checks: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, split in (("findings", "test"), ("val_findings", "val")):
        for finding in checks.get(key) or []:
            rows.append(
                {
                    "split": split,
                    "type": finding.get("type"),
                    "severity": finding.get("severity"),
                    "count": finding.get("count"),
                    "columns": finding.get("columns"),
                    "detail": finding.get("detail"),
                    "waived": finding.get("type") in (checks.get("waived") or {}),
                }
            )
    return rows


def _ledger_summary(
    project: Project, privacy: Mapping[str, Any], lifetime: float
) -> dict[str, Any]:
    from privacy.errors import PrivacyError
    from privacy.ledger import PrivacyLedger

    try:
        spends = PrivacyLedger(project.privacy_ledger_path).summary()
    except PrivacyError as exc:
        return {"error": str(exc), "lifetime_epsilon": lifetime}
    mine = next((s for s in spends if _same_budget(s, privacy)), None)
    return {
        "path": _relative(project, project.privacy_ledger_path),
        "lifetime_epsilon": lifetime,
        "spent_epsilon": mine.spent_epsilon if mine else None,
        "runs": len(mine.runs) if mine else 0,
        "steps": mine.steps if mine else 0,
    }


def _same_budget(spend: Any, privacy: Mapping[str, Any]) -> bool:
    """Whether the ledger's ``spend`` is the budget the model was charged to."""
    population = privacy.get("population")
    if population:
        return bool(spend.population == population)
    return spend.population is None and privacy.get("dataset_sha256") in spend.datasets


def _spent(ledger: Mapping[str, Any]) -> float | None:
    spent = ledger.get("spent_epsilon")
    return float(spent) if isinstance(spent, int | float) else None


def _privacy_with_ledger(privacy: Mapping[str, Any], ledger: Mapping[str, Any]) -> dict[str, Any]:
    """privacy.json as the pack shows it: one spent budget, the ledger's, everywhere.

    The train stage wrote what was spent when it finished; the evaluate stage's audit run
    spends more. The pack states the ledger's total (never less than what was spent) and
    keeps the train stage's figure under a name that says when it was taken.
    """
    budget = dict(privacy.get("budget") or {})
    if "spent_epsilon" in budget:
        budget["spent_epsilon_after_training"] = budget["spent_epsilon"]
    budget["spent_epsilon"] = _spent(ledger)
    return {**privacy, "budget": budget}


# --------------------------------------------------------------------------- paths


def _relative(project: Project, path: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_relative_to(project.root):
        raise InputError(f"{path}: outside the project {project.root}")
    return resolved.relative_to(project.root).as_posix()


def _rel(project: Project):
    return lambda path: _relative(project, path)


def _provenance_paths(project: Project, inputs: Inputs) -> list[str]:
    return [
        _relative(project, path)
        for directory in (inputs.ingested, inputs.splits)
        for path in sorted(directory.glob("*.provenance.json"))
    ]
