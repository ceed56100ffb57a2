"""``custodian experiments curve``: the privacy-utility curve from DVC experiments
(:mod:`custodian.services.experiments`)."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.services.experiments import write_curve


@click.group("experiments")
def experiments() -> None:
    """Summaries across DVC experiments."""


@experiments.command("curve")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("reports/privacy_utility.json"),
    show_default=True,
)
def curve_command(out: Path) -> None:
    """Write epsilon vs accuracy and worst-slice accuracy over every experiment."""
    for point in write_curve(out):
        click.echo(
            f"{point['name']}: epsilon {point['epsilon']:.3f}, accuracy "
            f"{point['accuracy']:.4f}, worst slice {point['worst_slice_accuracy']}"
        )
