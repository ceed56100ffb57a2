"""The workloads ``custodian bench dp`` measures: a synthetic MLP, or the pipeline's own.

All variants run side by side in one process on the same model and data (see
:mod:`training.dp_benchmark`); the printed ratios are what the speed goals are judged by.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from custodian.params import TrainParams, load_section
from custodian.services.dp_runs import encode_split
from training.dp_benchmark import (
    NAMED_WORKLOADS,
    Workload,
    memory_in_subprocess,
    synthetic_workload,
    workload_for,
)
from training.errors import TrainingInputError
from training.model import Activation, Mlp, ModelConfig

DEFAULT_MODEL = "64-256-256-2"


def bench_workload(
    model: str, batch_size: int | None, rows: int, device: torch.device, *, memory: bool
) -> tuple[Workload, Callable[[str], float] | None]:
    """The workload ``model`` names, and its peak-memory measurement (None: not measured)."""
    if model == "pipeline":
        # The memory subprocess rebuilds synthetic workloads only.
        return _pipeline_workload(batch_size), None
    batch = batch_size or 512
    if model in NAMED_WORKLOADS:
        workload = workload_for(model, rows, batch)
    else:
        workload = synthetic_workload(_widths(model), rows, batch)
    args = [model, str(rows), str(batch), str(device), "20", str(torch.get_num_threads())]
    return workload, memory_in_subprocess(args) if memory else None


def _widths(model: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in model.split("-"))
    except ValueError:
        raise TrainingInputError(
            f"--model: expected widths like {DEFAULT_MODEL} or 'pipeline', got {model!r}"
        ) from None
    if len(widths) < 2 or min(widths) < 1:
        raise TrainingInputError(f"--model: need at least two positive widths, got {model!r}")
    return widths


def _pipeline_workload(batch_size: int | None) -> Workload:
    params = load_section(TrainParams, "train")
    splits = Path("data/split")
    if not (splits / "train.csv").is_file():
        raise TrainingInputError(f"{splits / 'train.csv'}: not found; run `dvc repro split` first")
    _, table = encode_split(splits, "train", params.include_sensitive)
    config = ModelConfig(hidden=tuple(params.hidden), activation=Activation(params.activation))
    batch = batch_size or params.batch_size
    return Workload(
        name=f"pipeline Mlp {list(params.hidden)} on {len(table)} training rows, batch {batch}",
        make_model=lambda: Mlp(config, table.width),
        features=table.features,
        labels=table.labels,
        batch_size=batch,
    )
