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

from audits.files import atomic_write_json
from custodian.commands.datasets import load_dataset
from custodian.commands.dp_runs import charged_train_dp, dataset_spent, feature_spec
from custodian.commands.replicas import replica_group
from custodian.params import PrivacyParams, TrainParams, load_section
from custodian.project import Project
from governance.provenance import ColumnRole as SchemaRole
from governance.provenance import Provenance
from privacy.ledger import PrivacyLedger
from training.checkpoint import save_model
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
    train_record, train = encode_split(splits, "train", params.include_sensitive)
    _, val = encode_split(splits, "val", params.include_sensitive)

    dataset_sha256 = train_record.source_sha256
    device = resolve_device(params.device)
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
    click.echo(
        f"trained {result.epochs} epochs, {result.accounted_steps} steps: epsilon "
        f"{result.epsilon:.3f} at delta {dp.delta:g} (sigma {dp.noise_multiplier:.3f}, "
        f"{dp.accountant.value}); dataset budget spent {spent:.3f} of "
        f"{privacy.lifetime_epsilon:g}"
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
