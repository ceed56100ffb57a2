"""The check stage: leakage and contamination findings on the pipeline's own splits.

Column roles come from the provenance records, references and waivers from
params.yaml; the scan runs as Great Expectations expectations with Data Docs;
the findings go to ``reports/checks.json``. A critical finding waived in
params.yaml is let through, and the waiver is written to the audit log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import ValidationError

from audits.files import atomic_directory
from custodian.outputs import ChecksReport, Proxy, SplitSummary
from custodian.params import CheckParams
from custodian.services import trail
from custodian.services.datasets import load_dataset
from governance.checks import CheckConfig, CheckThresholds, Finding, FindingType, Severity
from governance.checks.scan import alignment
from governance.errors import InputError
from governance.expectations import context_copy
from governance.gx_checks import run_leakage_suite, stack_splits
from governance.provenance import ColumnRole, ColumnType, Provenance
from governance.registry import format_validation_error

EVALUATION_SPLITS = ("test", "val")


def run(
    params: CheckParams, splits: Path, ingested: Path, gx_dir: Path, docs: Path, out: Path
) -> ChecksReport:
    """Scan train against val and test (and ``params.references``); write ``out``."""
    train_record, train = load_dataset(splits, "train")
    summary = SplitSummary.read(splits / "split.json")
    config = _config(train_record, summary.time_column is not None, params.thresholds)
    references = {name: load_dataset(ingested, name)[1] for name in params.references}
    evaluation = {name: load_dataset(splits, name)[1] for name in EVALUATION_SPLITS}
    comparisons = {
        f"train_vs_{name}": stack_splits(train, frame, references)
        for name, frame in evaluation.items()
    }
    with (
        tempfile.TemporaryDirectory(prefix="custodian-gx-") as work,
        atomic_directory(docs) as staging_docs,
    ):
        context = context_copy(gx_dir, Path(work), staging_docs)
        outcomes = run_leakage_suite(context, comparisons, config, dict(params.waivers))

    def found(split: str) -> list:
        return [f for _, findings in outcomes[f"train_vs_{split}"] for f in findings]

    report = ChecksReport(
        dataset_sha256=train_record.source_sha256,
        config=config,
        waived=dict(params.waivers),
        findings=found("test"),
        val_findings=found("val"),
        proxies=_proxies([*found("test"), *found("val")]),
        not_compared={
            f"train_vs_{name}: {where}": columns
            for name, frame in evaluation.items()
            for where, columns in alignment(train, frame, references, config).items()
        },
        expectations={
            name: {r.expectation_config.kwargs["finding_type"]: bool(r.success) for r, _ in results}
            for name, results in outcomes.items()
        },
    )
    report.write(out)
    _log_waivers(report)
    return report


def _proxies(findings: list[Finding]) -> list[Proxy]:
    """Each distinct (inputs, sensitive attribute) pair a proxy finding names, once."""
    proxies = {
        (f.columns, f.sensitive_columns): f.severity
        for f in findings
        if f.type is FindingType.proxy
    }
    return [
        Proxy(inputs=inputs, sensitive=sensitive, severity=severity)
        for (inputs, sensitive), severity in proxies.items()
    ]


def _log_waivers(report: ChecksReport) -> None:
    """A critical finding let through by a waiver is evidence: it goes into the audit log."""
    for kind, reason in report.waived.items():
        waived = [
            f for f in report.all_findings() if f.type is kind and f.severity is Severity.critical
        ]
        if waived:
            trail.current().waiver(
                f"check:{kind.value}",
                reason,
                {"findings": len(waived), "count": sum(f.count for f in waived)},
            )


def _config(record: Provenance, time_aware: bool, thresholds: CheckThresholds) -> CheckConfig:
    pii = [c.name for c in record.columns if c.pii and c.role is not ColumnRole.identifier]
    try:
        return CheckConfig(
            label=record.column(ColumnRole.label),
            id_column=record.column(ColumnRole.identifier),
            # Train rows later than test rows are leakage only where the split
            # promised time order; a group split mixes years by design.
            time_column=record.column(ColumnRole.time) if time_aware else None,
            pii_columns=tuple(pii),
            exclude_columns=tuple(
                c.name
                for c in record.columns
                if c.role is ColumnRole.excluded and c.type is not ColumnType.text
            ),
            text_columns=tuple(c.name for c in record.columns if c.type is ColumnType.text),
            sensitive_columns=tuple(record.columns_with(ColumnRole.sensitive)),
            **thresholds.model_dump(exclude_unset=True),
        )
    except ValidationError as err:
        raise InputError(
            format_validation_error(err, where="params.yaml", prefix="check.thresholds")
        ) from None
