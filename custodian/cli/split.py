"""``custodian split``: deterministic, group- and time-aware train/val/test split."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import DataParams, SplitParams, load_section
from custodian.stages import split


@click.command("split")
@click.option("--ingested", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
def split_command(ingested: Path, out_dir: Path) -> None:
    """Split the pipeline's dataset into train/val/test with derived provenance."""
    summary = split.run(
        load_section(DataParams, "data"), load_section(SplitParams, "split"), ingested, out_dir
    )
    counts = ", ".join(f"{k} {v}" for k, v in summary.rows.model_dump().items())
    dropped = summary.dropped_rows
    click.echo(
        f"split {summary.dataset} by {summary.strategy}: {counts}"
        + (f"; {dropped} rows dropped" if dropped else "")
    )
