"""``custodian train``: DP-SGD on the training split, within the dataset's lifetime budget.

The procedure, top to bottom: read the split and its provenance, encode
features by the declared schema, plan the steps and calibrate the noise for the
target epsilon, refuse a run the lifetime budget cannot afford, train while
reserving every chunk of steps in the privacy ledger (and the audit log) before
taking it, then write the model and the privacy report.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import click
import torch

from audits.files import atomic_write_json
from custodian import trail
from custodian.commands.datasets import load_dataset
from custodian.params import PARAMS_FILE, PrivacyParams, TrainParams, load_section
from custodian.project import Project
from governance.errors import InputError
from governance.provenance import ColumnRole as SchemaRole
from governance.provenance import ColumnSpec, Provenance
from privacy.accounting import (
    AccountantKind,
    SgdSteps,
    calibrate_noise,
    default_delta,
    validate_delta,
)
from privacy.errors import PrivacyInputError
from privacy.ledger import PrivacyLedger
from training.checkpoint import save_model
from training.errors import TrainingInputError
from training.features import ColumnRole, FeatureSpec, encode_table
from training.model import Activation, ModelConfig
from training.precision import Precision, resolve_device
from training.trainer import DpConfig, OptimizerKind, TrainConfig, plan_steps, train_dp

DONE_MARKER = "done.json"


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
    train_record, train_frame = load_dataset(splits, "train")
    _, val_frame = load_dataset(splits, "val")
    label = train_record.column(SchemaRole.label)
    columns = [_feature_spec(c) for c in train_record.columns]
    train = encode_table(
        train_frame,
        columns,
        label,
        include_sensitive=params.include_sensitive,
        source=str(splits / "train.csv"),
    )
    val = encode_table(
        val_frame,
        columns,
        label,
        include_sensitive=params.include_sensitive,
        source=str(splits / "val.csv"),
    )

    _check_two_classes(train.labels, label, source=splits / "train.csv")

    kind = AccountantKind.parse(privacy.accountant)
    delta = privacy.delta if privacy.delta is not None else default_delta(len(train))
    _check_against_data(privacy, params, delta, rows=len(train), source=splits / "train.csv")
    config = TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        optimizer=OptimizerKind(params.optimizer),
        momentum=params.momentum,
        patience=params.patience,
        precision=Precision(params.precision),
        checkpoint_every=params.checkpoint_every,
        seed=params.seed,
    )
    plan = plan_steps(len(train), config.batch_size, config.epochs)
    sigma = calibrate_noise(privacy.target_epsilon, delta, plan.sample_rate, plan.total_steps, kind)
    dp = DpConfig(
        noise_multiplier=sigma, max_grad_norm=privacy.max_grad_norm, delta=delta, accountant=kind
    )
    model_config = ModelConfig(
        hidden=tuple(params.hidden), activation=Activation(params.activation)
    )

    dataset_sha256 = train_record.source_sha256
    ledger = PrivacyLedger(Project.discover().privacy_ledger_path)
    run_id, run_dir = _run(dataset_sha256, train_record, params, privacy, sigma)
    handle = ledger.open_run(
        dataset_sha256,
        run_id,
        sigma,
        plan.sample_rate,
        kind,
        delta,
        lifetime_epsilon=privacy.lifetime_epsilon,
    )
    remaining = max(plan.total_steps - handle.steps, 0)
    ledger.check_budget(
        dataset_sha256,
        SgdSteps(sigma, plan.sample_rate, remaining),
        privacy.lifetime_epsilon,
        delta,
        kind,
    )

    def reserve(total_steps: int) -> None:
        handle.record_steps(total_steps)
        trail.record_privacy_spend(
            dataset_sha256, run_id, sigma, plan.sample_rate, total_steps, kind.value, delta
        )

    result = train_dp(
        train,
        val,
        model_config,
        config,
        dp,
        run_dir=run_dir,
        reserve_steps=reserve,
        already_reserved=handle.steps,
        device=device,
    )
    save_model(model_dir, result.model, train.feature_names)
    spent = ledger.spent(dataset_sha256, delta, kind)
    atomic_write_json(
        report,
        {
            "epsilon": result.epsilon,
            "delta": delta,
            "noise_multiplier": sigma,
            "sample_rate": plan.sample_rate,
            "steps": result.accounted_steps,
            "accountant": kind.value,
            "max_grad_norm": privacy.max_grad_norm,
            "precision": config.precision.value,
            "dataset_sha256": dataset_sha256,
            "train_sha256": train_record.sha256,
            "target_epsilon": privacy.target_epsilon,
            "run_id": run_id,
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "skipped_steps": result.skipped_steps,
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
    atomic_write_json(run_dir / DONE_MARKER, {"steps": result.accounted_steps})
    click.echo(
        f"trained {result.epochs} epochs, {result.accounted_steps} steps: epsilon "
        f"{result.epsilon:.3f} at delta {delta:g} (sigma {sigma:.3f}, {kind.value}); "
        f"dataset budget spent {spent:.3f} of {privacy.lifetime_epsilon:g}"
    )


def _check_against_data(
    privacy: PrivacyParams, params: TrainParams, delta: float, *, rows: int, source: Path
) -> None:
    """The params that are valid only relative to the training split's size, named as such."""
    if params.batch_size > rows:
        raise InputError(
            f"{PARAMS_FILE}: train.batch_size: {params.batch_size} exceeds the {rows} rows "
            f"of {source}; one batch would be the whole dataset every step"
        )
    try:
        validate_delta(delta, rows)
    except PrivacyInputError as err:
        field = "privacy.delta" if privacy.delta is not None else "privacy.delta (default)"
        raise InputError(f"{PARAMS_FILE}: {field}: {err}") from None


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


def _feature_spec(column: ColumnSpec) -> FeatureSpec:
    return FeatureSpec(
        name=column.name,
        role=ColumnRole(column.role.value),
        minimum=column.minimum,
        maximum=column.maximum,
        categories=column.categories,
        nullable=column.nullable,
    )


def _run(
    dataset_sha256: str,
    record: Provenance,
    params: TrainParams,
    privacy: PrivacyParams,
    sigma: float,
) -> tuple[str, Path]:
    """This configuration's unfinished run (to resume it), or a new run after the finished ones."""
    identity = json.dumps(
        {
            "dataset": dataset_sha256,
            "train": record.sha256,
            "train_params": params.model_dump(),
            "privacy": privacy.model_dump(),
            "sigma": sigma,
        },
        sort_keys=True,
    )
    prefix = hashlib.sha256(identity.encode()).hexdigest()[:16]
    runs = Project.discover().evidence_dir / "runs"
    for attempt in itertools.count(1):
        run_id = f"{prefix}-{attempt}"
        if not (runs / run_id / DONE_MARKER).exists():
            return run_id, runs / run_id
    raise AssertionError("itertools.count never ends")


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
