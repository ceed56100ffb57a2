"""``custodian check``: leakage and contamination findings across splits.

Two ways in: ad hoc on any two files (``--train``/``--test``), or as the
pipeline's ``check`` stage on its own splits (``--splits``), where column roles
come from the provenance records, references and waivers from params.yaml, the
scan runs as Great Expectations expectations with Data Docs, and the findings
go to ``reports/checks.json``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
from pydantic import ValidationError

from audits.files import atomic_directory, atomic_write_json
from custodian import trail
from custodian.commands.datasets import load_dataset, read_table, table_name
from custodian.params import CheckParams, load_section
from governance.checks import CheckConfig, CheckThresholds, Finding, Severity, scan
from governance.checks.scan import alignment
from governance.errors import CheckFailed, InputError
from governance.expectations import context_copy
from governance.gx_checks import run_leakage_suite, stack_splits
from governance.provenance import ColumnRole, Provenance
from governance.registry import format_validation_error

EVALUATION_SPLITS = ("test", "val")


@click.command("check")
@click.option(
    "--train", type=click.Path(path_type=Path), help="Training data (CSV, or sealed .csv.enc)."
)
@click.option(
    "--test", type=click.Path(path_type=Path), help="Evaluation data (CSV, or sealed .csv.enc)."
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    multiple=True,
    help="A reference/benchmark set that must not be in training data (repeatable).",
)
@click.option("--label", help="Label column.")
@click.option("--id-column", help="Identifier column (group leakage).")
@click.option("--time-column", help="Time column (temporal leakage).")
@click.option("--sensitive", help="Sensitive attribute columns, comma-separated (proxy check).")
@click.option(
    "--splits",
    type=click.Path(path_type=Path),
    help="Pipeline mode: a split directory with provenance records.",
)
@click.option(
    "--ingested",
    type=click.Path(path_type=Path),
    help="Pipeline mode: ingested datasets (for params check.references).",
)
@click.option(
    "--gx", "gx_dir", type=click.Path(path_type=Path), default=Path("gx"), show_default=True
)
@click.option("--docs", type=click.Path(path_type=Path), help="Pipeline mode: Data Docs dir.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the findings as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def check_command(
    train,
    test,
    reference,
    label,
    id_column,
    time_column,
    sensitive,
    splits,
    ingested,
    gx_dir,
    docs,
    out,
    as_json,
) -> None:
    """Find leakage and contamination; exit 1 on an unwaived critical finding."""
    if splits is not None:
        if train or test or reference or label or id_column or time_column or sensitive:
            raise click.UsageError("--splits takes roles from provenance; drop the other inputs")
        if ingested is None or docs is None or out is None:
            raise click.UsageError("--splits needs --ingested, --docs and --out")
        report = _pipeline_check(splits, ingested, gx_dir, docs)
    else:
        if train is None or test is None:
            raise click.UsageError("give --train and --test (or --splits)")
        config = _config(
            label=label,
            id_column=id_column,
            time_column=time_column,
            sensitive_columns=tuple(c for c in (sensitive or "").split(",") if c),
        )
        references = {table_name(path): read_table(path) for path in reference}
        frames = read_table(train), read_table(test)
        try:
            findings = scan(*frames, references, config=config)
        except InputError as err:
            # The scan names frames by role; the user named files.
            raise InputError(f"--train {train}, --test {test}: {err}") from None
        report = {"train": str(train), "test": str(test), "findings": _dump(findings), "waived": {}}
        report["not_compared"] = alignment(*frames, references, config)
    if out is not None:
        atomic_write_json(out, report)
    _print(report, as_json)
    _log_waivers(report)
    blocking = [
        f
        for f in _all_findings(report)
        if f["severity"] == Severity.critical and f["type"] not in report["waived"]
    ]
    if blocking:
        kinds = sorted({f["type"] for f in blocking})
        raise CheckFailed(
            f"{len(blocking)} critical finding(s): {', '.join(kinds)}"
            + (f"; see {out}" if out else "")
        )


def _log_waivers(report: dict) -> None:
    """A critical finding let through by a waiver is evidence: it goes into the audit log."""
    for kind, reason in report["waived"].items():
        waived = [
            f
            for f in _all_findings(report)
            if f["type"] == kind and f["severity"] == Severity.critical
        ]
        if waived:
            trail.current().waiver(
                f"check:{kind}",
                reason,
                {"findings": len(waived), "count": sum(f["count"] for f in waived)},
            )


def _config(**values) -> CheckConfig:
    try:
        return CheckConfig(**values)
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="check")) from None


def _config_from(record: Provenance, time_aware: bool, thresholds: CheckThresholds) -> CheckConfig:
    pii = [c.name for c in record.columns if c.pii and c.role is not ColumnRole.identifier]
    try:
        return CheckConfig(
            label=record.column(ColumnRole.label),
            id_column=record.column(ColumnRole.identifier),
            # Train rows later than test rows are leakage only where the split
            # promised time order; a group split mixes years by design.
            time_column=record.column(ColumnRole.time) if time_aware else None,
            pii_columns=tuple(pii),
            exclude_columns=tuple(record.columns_with(ColumnRole.excluded)),
            sensitive_columns=tuple(record.columns_with(ColumnRole.sensitive)),
            **thresholds.model_dump(exclude_unset=True),
        )
    except ValidationError as err:
        raise InputError(
            format_validation_error(err, where="params.yaml", prefix="check.thresholds")
        ) from None


def _pipeline_check(splits: Path, ingested: Path, gx_dir: Path, docs: Path) -> dict:
    params = load_section(CheckParams, "check")
    train_record, train = load_dataset(splits, "train")
    split_summary = json.loads((splits / "split.json").read_text(encoding="utf-8"))
    config = _config_from(train_record, split_summary["time_column"] is not None, params.thresholds)
    references = {name: load_dataset(ingested, name)[1] for name in params.references}
    comparisons = {
        f"train_vs_{name}": stack_splits(train, load_dataset(splits, name)[1], references)
        for name in EVALUATION_SPLITS
    }
    with (
        tempfile.TemporaryDirectory(prefix="custodian-gx-") as work,
        atomic_directory(docs) as staging_docs,
    ):
        context = context_copy(gx_dir, Path(work), staging_docs)
        outcomes = run_leakage_suite(context, comparisons, config, dict(params.waivers))
    report: dict = {
        "dataset_sha256": train_record.source_sha256,
        "config": config.model_dump(mode="json"),
        "waived": {k.value: v for k, v in params.waivers.items()},
    }
    for name in EVALUATION_SPLITS:
        key = "findings" if name == "test" else f"{name}_findings"
        report[key] = [
            f.model_dump(mode="json")
            for _, findings in outcomes[f"train_vs_{name}"]
            for f in findings
        ]
    # Inputs the model trains on that stand in for a sensitive attribute, for the
    # model card and the compliance page (audits read this field).
    proxies = {
        (tuple(f["columns"]), tuple(f["sensitive_columns"])): f["severity"]
        for f in _all_findings(report)
        if f["type"] == "proxy"
    }
    report["proxies"] = [
        {"inputs": list(inputs), "sensitive": list(sensitive), "severity": severity}
        for (inputs, sensitive), severity in proxies.items()
    ]
    report["not_compared"] = {
        f"train_vs_{name}: {where}": columns
        for name in EVALUATION_SPLITS
        for where, columns in alignment(
            train, load_dataset(splits, name)[1], references, config
        ).items()
    }
    report["expectations"] = {
        name: {r.expectation_config.kwargs["finding_type"]: bool(r.success) for r, _ in results}
        for name, results in outcomes.items()
    }
    return report


def _dump(findings: list[Finding]) -> list[dict]:
    return [f.model_dump(mode="json") for f in findings]


def _all_findings(report: dict) -> list[dict]:
    return [f for key, value in report.items() if key.endswith("findings") for f in value]


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    findings = _all_findings(report)
    for where, columns in report.get("not_compared", {}).items():
        click.echo(f"not compared ({where} lacks them or has only them): {', '.join(columns)}")
    if not findings:
        click.echo("no findings")
        return
    click.echo(f"{'SEVERITY':<9} {'TYPE':<24} {'COUNT':>7}  COLUMNS")
    for f in findings:
        columns = ", ".join(f["columns"])
        if len(columns) > 60:
            columns = f"{len(f['columns'])} columns"
        waived = " (waived)" if f["type"] in report["waived"] else ""
        click.echo(f"{f['severity']:<9} {f['type']:<24} {f['count']:>7}  {columns}{waived}")
