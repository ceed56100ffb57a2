"""The split stage: deterministic, group- and time-aware train/val/test split.

Each split is written with derived provenance (its parent's hash and license
obligations, and this stage as producer), and ``split.json`` says how the
dataset was divided; all in one atomic directory.
"""

from __future__ import annotations

from pathlib import Path

from audits.files import atomic_directory
from custodian.outputs import SplitSummary
from custodian.params import DataParams, SplitParams
from custodian.services.datasets import load_dataset, write_dataset
from governance.split import (
    SPLITS,
    content_key,
    derived_provenance,
    group_and_time_columns,
    split_frame,
)
from governance.tables import sha256_bytes

STAGE = "split"
SUMMARY = "split.json"


def run(data: DataParams, params: SplitParams, ingested: Path, out_dir: Path) -> SplitSummary:
    """Split ``data.dataset`` from ``ingested`` into ``out_dir``; the summary written there."""
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
    summary = SplitSummary(
        dataset=record.name,
        dataset_sha256=record.sha256,
        strategy=params.strategy.value,
        seed=params.seed,
        group_column=result.group_column,
        time_column=result.time_column,
        dropped_rows=result.dropped_rows,
        rows={name: len(result.frames[name]) for name in SPLITS},
    )
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
        summary.write(staging / SUMMARY)
    return summary
