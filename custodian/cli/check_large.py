"""``custodian check-large``: the leakage and duplicate checks on splits larger than memory
(:mod:`custodian.services.check_large`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from audits.files import atomic_write_json
from custodian.services.check_large import check_large, require_passed

_DATA_HELP = "Parquet file, directory or glob of Parquet files, or one CSV file."


@click.command("check-large")
@click.option("--train", required=True, type=click.Path(path_type=Path), help=_DATA_HELP)
@click.option("--test", required=True, type=click.Path(path_type=Path), help=_DATA_HELP)
@click.option("--label", help="Label column.")
@click.option("--id-column", help="Identifier column (group leakage).")
@click.option("--time-column", help="Time column (temporal leakage).")
@click.option("--exclude", multiple=True, help="A column no check compares (repeatable).")
@click.option(
    "--schema",
    type=click.Path(path_type=Path),
    help="Provenance record (JSON) of the train file: run its GX schema suite over it.",
)
@click.option(
    "--test-schema",
    type=click.Path(path_type=Path),
    help="Provenance record (JSON) of the test file: run its GX schema suite over it.",
)
@click.option(
    "--memory-limit", default="1GB", show_default=True, help="DuckDB's memory limit, e.g. 256MB."
)
@click.option("--threads", type=int, help="DuckDB threads [default: all CPUs].")
@click.option(
    "--temp-dir", type=click.Path(path_type=Path), help="Where DuckDB spills [default: system tmp]."
)
@click.option(
    "--gx-chunk-rows", type=int, default=250_000, show_default=True, help="Rows per GX chunk."
)
@click.option("--out", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_large_command(
    train: Path, test: Path, out: Path | None, as_json: bool, **options
) -> None:
    """Find duplicates and leakage out of core; exit 1 on a critical finding or failed suite."""
    report = check_large(train, test, **options)
    if out is not None:
        atomic_write_json(out, report)
    _print(report, as_json)
    require_passed(report, out)


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    findings = report["findings"]
    if findings:
        click.echo(f"{'SEVERITY':<9} {'TYPE':<24} {'COUNT':>7}  COLUMNS")
        for f in findings:
            columns = ", ".join(f["columns"])
            if len(columns) > 60:
                columns = f"{len(f['columns'])} columns"
            click.echo(f"{f['severity']:<9} {f['type']:<24} {f['count']:>7}  {columns}")
    else:
        click.echo("no findings")
    sampled = report["sampled"]
    click.echo(
        f"checked on a sample of at most {sampled['rows_per_split']:,} rows per split:"
        f" {', '.join(sampled['types'])}"
    )
    click.echo(f"not checked out of core: {', '.join(report['not_checked'])}")
    for split, outcome in report.get("expectations", {}).items():
        _print_suite(split, outcome)


def _print_suite(split: str, outcome: dict) -> None:
    verdict = "passed" if outcome["success"] else "FAILED"
    click.echo(
        f"schema suite {outcome['suite']} on {split}: {verdict}"
        f" ({outcome['successful']}/{outcome['evaluated']} expectations)"
    )
    for failed in outcome["failed"]:
        where = f" {failed['column']}" if failed["column"] else ""
        unexpected = failed["unexpected_count"]
        count = f": {unexpected} unexpected" if unexpected is not None else ""
        click.echo(f"  {failed['expectation']}{where}{count}")
