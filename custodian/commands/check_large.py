"""``custodian check-large``: the leakage and duplicate checks on splits larger than memory.

The splits are read from disk by DuckDB under a memory limit (spilling to a
scratch directory beyond it), never loaded whole; the findings have the same
form as ``custodian check``'s. With ``--schema`` / ``--test-schema`` the
dataset's GX schema suite also runs over the file, chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click
from pydantic import ValidationError

from audits.files import atomic_write_json
from custodian.commands.datasets import load_record
from governance.checks import CheckConfig, Severity
from governance.checks.scan import worst_first
from governance.errors import CheckFailed, InputError
from governance.large import SAMPLED, SKIPPED, ScanLimits, scan_large, scan_sampled
from governance.registry import format_validation_error

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
    train: Path,
    test: Path,
    label: str | None,
    id_column: str | None,
    time_column: str | None,
    exclude: tuple[str, ...],
    schema: Path | None,
    test_schema: Path | None,
    memory_limit: str,
    threads: int | None,
    temp_dir: Path | None,
    gx_chunk_rows: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Find duplicates and leakage out of core; exit 1 on a critical finding or failed suite."""
    try:
        config = CheckConfig(
            label=label, id_column=id_column, time_column=time_column, exclude_columns=exclude
        )
        limits = ScanLimits(
            memory_limit=memory_limit,
            temp_directory=temp_dir,
            gx_chunk_rows=gx_chunk_rows,
            **({"threads": threads} if threads is not None else {}),
        )
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="check-large")) from None
    records = {
        split: load_record(path)
        for split, path in (("train", schema), ("test", test_schema))
        if path is not None
    }
    findings = worst_first(
        [*scan_large(train, test, config, limits), *scan_sampled(train, test, config, limits)]
    )
    report: dict = {
        "train": str(train),
        "test": str(test),
        "findings": [f.model_dump(mode="json") for f in findings],
        "sampled": {"types": [str(k) for k in SAMPLED], "rows_per_split": limits.sample_rows},
        "not_checked": [str(kind) for kind in SKIPPED],
        "limits": limits.model_dump(mode="json"),
    }
    if records:
        # GX takes seconds to import; only a run with a schema pays for it.
        from governance.large.suite import schema_suite_large

        paths = {"train": train, "test": test}
        report["expectations"] = {
            split: dataclasses.asdict(schema_suite_large(paths[split], record, limits))
            for split, record in records.items()
        }
    if out is not None:
        atomic_write_json(out, report)
    _print(report, as_json)
    problems = []
    critical = [f for f in report["findings"] if f["severity"] == Severity.critical]
    if critical:
        kinds = sorted({f["type"] for f in critical})
        problems.append(f"{len(critical)} critical finding(s): {', '.join(kinds)}")
    failed = [s for s, o in report.get("expectations", {}).items() if not o["success"]]
    if failed:
        problems.append(f"schema suite failed on {', '.join(failed)}")
    if problems:
        raise CheckFailed("; ".join(problems) + (f"; see {out}" if out else ""))


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
