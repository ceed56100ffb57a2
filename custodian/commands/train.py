"""``custodian train``: DP-SGD on the training split, within the dataset's lifetime budget.

The procedure, top to bottom: read the split and its provenance, encode
features by the declared schema, plan the steps and calibrate the noise for the
target epsilon, refuse a run the lifetime budget cannot afford, train while
reserving every chunk of steps in the privacy ledger (and the audit log) before
taking it, then write the model and the privacy report.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from audits.files import atomic_write_json
from custodian.commands.datasets import load_dataset
from custodian.commands.dp_runs import (
    charged_train_dp,
    dataset_spent,
    feature_spec,
    mark_finished,
    resolved_delta,
)
from custodian.commands.replicas import replica_group
from custodian.params import PARAMS_FILE, PrivacyParams, TrainParams, load_section
from custodian.project import Project
from governance.errors import InputError
from governance.provenance import ColumnRole as SchemaRole
from governance.provenance import Provenance
from privacy.ledger import PrivacyLedger
from training.checkpoint import save_model
from training.errors import TrainingInputError
from training.features import EncodedTable, encode_table
from training.precision import resolve_device
from training.replicas import replica_device


@click.command("train")
@click.option("--splits", type=click.Path(path_type=Path), required=True)
@click.option("--model-dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--report", type=click.Path(path_type=Path), required=True, help="reports/privacy.json"
)
@click.option(
    "--curve",
    type=click.Path(path_type=Path),
    required=True,
    help="Per-epoch loss and epsilon (a DVC plot).",
)
def train_command(splits: Path, model_dir: Path, report: Path, curve: Path) -> None:
    """Train the model with differential privacy; write the model and privacy report."""
    privacy = load_section(PrivacyParams, "privacy")
    params = load_section(TrainParams, "train")
    device = _device(params.device)
    train_record, train = encode_split(splits, "train", params.include_sensitive)
    _, val = encode_split(splits, "val", params.include_sensitive)
    source = splits / "train.csv"
    _check_two_classes(train.labels, train_record.column(SchemaRole.label), source=source)
    _check_against_data(privacy, params, rows=len(train), source=source)

    dataset_sha256 = train_record.source_sha256
    argv = ["train", "--splits", str(splits), "--model-dir", str(model_dir)]
    argv += ["--report", str(report), "--curve", str(curve)]
    with replica_group(params.world_size, argv, device) as replica:
        run = charged_train_dp(
            train,
            val,
            params,
            privacy,
            dataset_sha256=dataset_sha256,
            purpose="train",
            identity={
                "dataset": dataset_sha256,
                "train": train_record.sha256,
                "train_params": params.model_dump(exclude={"world_size"}),
                "privacy": privacy.model_dump(),
            },
            device=replica_device(replica, device),
            replica=replica,
        )
    if not replica.leader:
        return  # the leader writes the model and the reports
    result, dp = run.result, run.dp

    save_model(model_dir, result.model, train.feature_names)
    spent = dataset_spent(dataset_sha256, dp.delta, dp.accountant.value)
    atomic_write_json(
        report,
        {
            "epsilon": result.epsilon,
            "delta": dp.delta,
            "noise_multiplier": dp.noise_multiplier,
            "sample_rate": run.plan.sample_rate,
            "steps": result.accounted_steps,
            "accountant": dp.accountant.value,
            "max_grad_norm": dp.max_grad_norm,
            "precision": params.precision,
            "clipping": params.clipping,
            "world_size": params.world_size,
            "dataset_sha256": dataset_sha256,
            "train_sha256": train_record.sha256,
            "target_epsilon": privacy.target_epsilon,
            "run_id": run.run_id,
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "resumed_from_step": result.resumed_from_step,
            "budget": {"lifetime_epsilon": privacy.lifetime_epsilon, "spent_epsilon": spent},
        },
    )
    atomic_write_json(
        curve,
        [
            {
                "epoch": r.epoch,
                "steps": r.steps,
                "train_loss": r.train_loss,
                "val_loss": r.val_loss,
                "epsilon": r.epsilon,
            }
            for r in result.curve
        ],
    )
    # Marked finished only once its outputs exist: a run killed before that is resumed
    # (it re-emits its outputs from the checkpoint without taking a step), not retrained.
    mark_finished(run)
    click.echo(
        f"trained {result.epochs} epochs, {result.accounted_steps} steps: epsilon "
        f"{result.epsilon:.3f} at delta {dp.delta:g} (sigma {dp.noise_multiplier:.3f}, "
        f"{dp.accountant.value}); dataset budget spent {spent:.3f} of "
        f"{privacy.lifetime_epsilon:g}"
    )
    if result.nonfinite_records:  # an operator diagnostic, kept out of the reports
        click.echo(
            f"note: {result.nonfinite_records} sampled records had a non-finite gradient "
            "and contributed zero",
            err=True,
        )


def _check_against_data(
    privacy: PrivacyParams, params: TrainParams, *, rows: int, source: Path
) -> None:
    """The params that are valid only relative to the training split's size, named as such."""
    if params.batch_size > rows:
        raise InputError(
            f"{PARAMS_FILE}: train.batch_size: {params.batch_size} exceeds the {rows} rows "
            f"of {source}; one batch would be the whole dataset every step"
        )
    resolved_delta(privacy, rows)


def _device(choice: str) -> torch.device:
    # Resolved before anything is opened: asking for CUDA on a machine without it is a
    # params mistake, not a reason to leave a started run behind.
    try:
        return resolve_device(choice)
    except TrainingInputError as err:
        raise InputError(f"{PARAMS_FILE}: train.device: {err}") from None


def _check_two_classes(labels: torch.Tensor, label: str, *, source: Path) -> None:
    # A binary classifier trained on one class learns a constant, and spends budget doing it.
    if labels.unique().numel() < 2:
        raise InputError(
            f"{source}: column {label!r} (label): a single class in every row; "
            "training needs both classes"
        )


def encode_split(
    splits: Path, name: str, include_sensitive: bool
) -> tuple[Provenance, EncodedTable]:
    """Split ``name``'s provenance and its rows encoded by the declared schema."""
    record, frame = load_dataset(splits, name)
    table = encode_table(
        frame,
        [feature_spec(c) for c in record.columns],
        record.column(SchemaRole.label),
        include_sensitive=include_sensitive,
        source=str(splits / f"{name}.csv"),
    )
    return record, table


@click.group("privacy")
def privacy_group() -> None:
    """Inspect the per-dataset privacy budget ledger."""


@privacy_group.command("ledger")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_command(as_json: bool) -> None:
    """Epsilon spent per dataset, composed over every run that trained on it."""
    spends = PrivacyLedger(Project.discover().privacy_ledger_path).summary()
    if as_json:
        click.echo(json.dumps([s.to_json() for s in spends], indent=2))
        return
    if not spends:
        click.echo("no privacy spent yet")
    for spend in spends:
        click.echo(
            f"dataset {spend.dataset_sha256[:12]}: epsilon {spend.spent_epsilon:.3f} "
            f"at delta {spend.delta:g} ({spend.accountant}) over {len(spend.runs)} "
            f"run(s), {spend.steps} steps"
        )
