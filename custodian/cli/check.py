"""``custodian check``: leakage and contamination findings across splits.

Two ways in: ad hoc on any two files (``--train``/``--test``,
:mod:`custodian.services.file_checks`), or as the pipeline's ``check`` stage on
its own splits (``--splits``, :mod:`custodian.stages.check`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from custodian.outputs import ChecksReport, FileChecks
from custodian.params import CheckParams, load_section
from custodian.services.file_checks import check_files, require_no_blocking
from custodian.stages import check

_PATH = click.Path(path_type=Path)


@click.command("check")
@click.option("--train", type=_PATH, help="Training data (CSV, or sealed .csv.enc).")
@click.option("--test", type=_PATH, help="Evaluation data (CSV, or sealed .csv.enc).")
@click.option(
    "--reference",
    type=_PATH,
    multiple=True,
    help="A reference/benchmark set that must not be in training data (repeatable).",
)
@click.option("--label", help="Label column.")
@click.option("--id-column", help="Identifier column (group leakage).")
@click.option("--time-column", help="Time column (temporal leakage).")
@click.option("--sensitive", help="Sensitive attribute columns, comma-separated (proxy check).")
@click.option(
    "--splits", type=_PATH, help="Pipeline mode: a split directory with provenance records."
)
@click.option(
    "--ingested", type=_PATH, help="Pipeline mode: ingested datasets (for params check.references)."
)
@click.option("--gx", "gx_dir", type=_PATH, default=Path("gx"), show_default=True)
@click.option("--docs", type=_PATH, help="Pipeline mode: Data Docs dir.")
@click.option("--out", type=_PATH, help="Write the findings as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print findings as JSON.")
def check_command(splits: Path | None, out: Path | None, as_json: bool, **options) -> None:
    """Find leakage and contamination; exit 1 on an unwaived critical finding."""
    report = _pipeline(splits, out, **options) if splits else _files(**options)
    if out is not None and isinstance(report, FileChecks):
        report.write(out)  # the stage has written its own
    _print(report, as_json)
    require_no_blocking(report.all_findings(), report.waived, out)


def _pipeline(splits: Path, out: Path | None, **options) -> ChecksReport:
    file_inputs = ("train", "test", "reference", "label", "id_column", "time_column", "sensitive")
    if any(options[name] for name in file_inputs):
        raise click.UsageError("--splits takes roles from provenance; drop the other inputs")
    if options["ingested"] is None or options["docs"] is None or out is None:
        raise click.UsageError("--splits needs --ingested, --docs and --out")
    params = load_section(CheckParams, "check")
    return check.run(params, splits, options["ingested"], options["gx_dir"], options["docs"], out)


def _files(**options) -> FileChecks:
    if options["train"] is None or options["test"] is None:
        raise click.UsageError("give --train and --test (or --splits)")
    return check_files(
        options["train"],
        options["test"],
        options["reference"],
        label=options["label"],
        id_column=options["id_column"],
        time_column=options["time_column"],
        sensitive=tuple(c for c in (options["sensitive"] or "").split(",") if c),
    )


def _print(report: ChecksReport | FileChecks, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    findings = report.all_findings()
    for where, columns in report.not_compared.items():
        click.echo(f"not compared ({where} lacks them or has only them): {', '.join(columns)}")
    if not findings:
        click.echo("no findings")
        return
    click.echo(f"{'SEVERITY':<9} {'TYPE':<24} {'COUNT':>7}  COLUMNS")
    for f in findings:
        columns = ", ".join(f.columns)
        if len(columns) > 60:
            columns = f"{len(f.columns)} columns"
        waived = " (waived)" if f.type in report.waived else ""
        click.echo(f"{f.severity:<9} {f.type:<24} {f.count:>7}  {columns}{waived}")
