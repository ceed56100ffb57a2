"""``custodian validate``: Great Expectations suites for every ingested dataset."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

import click

from audits.files import atomic_directory, atomic_write_json
from custodian.commands.datasets import load_ingested
from custodian.params import ValidateParams, load_section
from governance.errors import CheckFailed
from governance.expectations import run_suites


@click.command("validate")
@click.option("--ingested", type=click.Path(path_type=Path), required=True)
@click.option(
    "--gx",
    "gx_dir",
    type=click.Path(path_type=Path),
    default=Path("gx"),
    show_default=True,
    help="The committed GX file context (template).",
)
@click.option(
    "--docs",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for the Data Docs site.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON summary of every suite's result.",
)
def validate_command(ingested: Path, gx_dir: Path, docs: Path, out: Path) -> None:
    """Validate every ingested dataset against its schema suite; build Data Docs."""
    params = load_section(ValidateParams, "validate")
    datasets = load_ingested(ingested)
    with (
        tempfile.TemporaryDirectory(prefix="custodian-gx-") as work,
        atomic_directory(docs) as staging_docs,
    ):
        outcomes = run_suites(gx_dir, Path(work), staging_docs, datasets)
    failing = [o for o in outcomes if not o.success]
    unwaived = [o for o in failing if o.dataset not in params.waivers]
    atomic_write_json(
        out,
        {
            "success": not unwaived,
            "suites": [asdict(o) for o in outcomes],
            "waived": {
                o.dataset: params.waivers[o.dataset] for o in failing if o.dataset in params.waivers
            },
        },
    )
    for outcome in outcomes:
        status = "pass" if outcome.success else "FAIL"
        click.echo(
            f"{status} {outcome.suite}: {outcome.successful}/{outcome.evaluated} expectations met"
        )
    click.echo(f"Data Docs: {docs / 'index.html'}")
    if unwaived:
        first = unwaived[0].failed[0] if unwaived[0].failed else None
        detail = f" ({first.expectation} on {first.column})" if first else ""
        raise CheckFailed(
            f"validation failed for {', '.join(o.suite for o in unwaived)}{detail}; "
            f"see {out} and {docs / 'index.html'}"
        )
