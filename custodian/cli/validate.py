"""``custodian validate``: Great Expectations suites for every ingested dataset."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import ValidateParams, load_section
from custodian.stages import validate


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
    report = validate.run(load_section(ValidateParams, "validate"), ingested, gx_dir, docs, out)
    for suite in report.suites:
        status = "pass" if suite.success else "FAIL"
        click.echo(f"{status} {suite.suite}: {suite.successful}/{suite.evaluated} expectations met")
    click.echo(f"Data Docs: {docs / 'index.html'}")
    validate.require_passed(report, out, docs)
