"""``custodian split``: deterministic, group- and time-aware train/val/test split."""

from __future__ import annotations

from pathlib import Path

import click

from audits.files import atomic_directory, atomic_write_json
from custodian.commands.datasets import load_dataset, write_dataset
from custodian.params import DataParams, SplitParams, load_section
from governance.split import (
    SPLITS,
    content_key,
    derived_provenance,
    group_and_time_columns,
    split_frame,
)
from governance.tables import sha256_bytes

STAGE = "split"


@click.command("split")
@click.option("--ingested", type=click.Path(path_type=Path), required=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
def split_command(ingested: Path, out_dir: Path) -> None:
    """Split the pipeline's dataset into train/val/test with derived provenance."""
    data = load_section(DataParams, "data")
    params = load_section(SplitParams, "split")
    record, frame = load_dataset(ingested, data.dataset)
    group_column, time_column = group_and_time_columns(record)
    result = split_frame(
        frame,
        strategy=params.strategy,
        fractions=params.fractions.model_dump(),
        seed=params.seed,
        group_column=group_column,
        time_column=time_column,
        content_key=content_key(frame, record),
    )
    summary = {
        "dataset": record.name,
        "dataset_sha256": record.sha256,
        "strategy": params.strategy.value,
        "seed": params.seed,
        "group_column": result.group_column,
        "time_column": result.time_column,
        "dropped_rows": result.dropped_rows,
        "rows": {},
    }
    with atomic_directory(out_dir) as staging:
        for name in SPLITS:
            content = result.frames[name].to_csv(index=False, lineterminator="\n").encode()
            derived = derived_provenance(
                record,
                split=name,
                sha256=sha256_bytes(content),
                rows=len(result.frames[name]),
                stage=STAGE,
            )
            write_dataset(staging, name, content, derived)
            summary["rows"][name] = len(result.frames[name])
        atomic_write_json(staging / "split.json", summary)
    counts = ", ".join(f"{k} {v}" for k, v in summary["rows"].items())
    click.echo(
        f"split {record.name} by {params.strategy.value}: {counts}"
        + (f"; {result.dropped_rows} rows dropped" if result.dropped_rows else "")
    )
