"""The train stage: DP-SGD on the training split, within the dataset's lifetime budget.

The procedure, top to bottom: read the split and its provenance, encode
features by the declared schema, plan the steps and calibrate the noise for the
target epsilon, refuse a run the lifetime budget cannot afford, train while
reserving every chunk of steps in the privacy ledger (and the audit log) before
taking it, then write the model and the privacy report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from audits.files import atomic_write_json
from custodian.outputs import PrivacyReport
from custodian.params import PARAMS_FILE, PrivacyParams, TrainParams
from custodian.services.dp_runs import (
    charged_train_dp,
    dataset_spent,
    encode_split,
    mark_finished,
    privacy_units,
    resolved_delta,
)
from custodian.services.preflight import Plan, preflight
from custodian.services.replicas import replica_group
from governance.errors import InputError
from governance.provenance import ColumnRole as SchemaRole
from privacy.sampling import PersonIndex
from privacy.unit import COVERS, PrivacyUnit, group_privacy
from training.checkpoint import save_model
from training.errors import TrainingInputError
from training.features import EncodedTable
from training.precision import resolve_device
from training.replicas import replica_device


@dataclass(frozen=True)
class Trained:
    """The privacy report written, and an operator diagnostic kept out of the reports."""

    privacy: PrivacyReport
    # Sampled records whose gradient was not finite: they contributed zero.
    nonfinite_records: int


def run(
    privacy: PrivacyParams,
    params: TrainParams,
    splits: Path,
    model_dir: Path,
    report: Path,
    curve: Path,
) -> Trained | None:
    """Train, write the model, ``report`` and ``curve``; the privacy report (None on a
    follower replica: its leader writes the outputs)."""
    device = _device(params.device)
    train_record, train = encode_split(splits, "train", params.include_sensitive)
    _, val = encode_split(splits, "val", params.include_sensitive)
    source = splits / "train.csv"
    _check_two_classes(train.labels, train_record.column(SchemaRole.label), source=source)
    _check_against_data(privacy, params, rows=privacy_units(train, privacy), source=source)
    # Every stage's params against the data and the policy, before any epsilon is spent.
    plan = preflight(splits)
    plan.raise_if_problems()

    dataset_sha256 = train_record.source_sha256
    population = train_record.population
    argv = ["train", "--splits", str(splits), "--model-dir", str(model_dir)]
    argv += ["--report", str(report), "--curve", str(curve)]
    with replica_group(params.world_size, argv, device) as replica:
        charged = charged_train_dp(
            train,
            val,
            params,
            privacy,
            dataset_sha256=dataset_sha256,
            population=population,
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
        return None  # the leader writes the model and the reports
    result, dp = charged.result, charged.dp

    save_model(model_dir, result.model, train.feature_names)
    spent = dataset_spent(dataset_sha256, dp.delta, dp.accountant.value, population)
    written = PrivacyReport(
        epsilon=result.epsilon,
        delta=dp.delta,
        noise_multiplier=dp.noise_multiplier,
        sample_rate=charged.plan.sample_rate,
        steps=result.accounted_steps,
        accountant=dp.accountant.value,
        max_grad_norm=dp.max_grad_norm,
        precision=params.precision,
        clipping=params.clipping,
        world_size=params.world_size,
        dataset_sha256=dataset_sha256,
        train_sha256=train_record.sha256,
        target_epsilon=privacy.target_epsilon,
        run_id=charged.run_id,
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        resumed_from_step=result.resumed_from_step,
        budget={
            "lifetime_epsilon": privacy.lifetime_epsilon,
            "spent_epsilon": spent,
            # What the population (or dataset) will have spent once the evaluate stage's
            # audit run (planned before this run, at its full step count) is charged too.
            "total_with_audit_epsilon": _with_audit(plan, spent),
        },
        **unit_report(train, dp.unit, population, result.epsilon, dp.delta),
    )
    written.write(report)
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
    mark_finished(charged)
    return Trained(privacy=written, nonfinite_records=result.nonfinite_records)


def _with_audit(plan: Plan, spent: float) -> float:
    audit = [run for run in plan.runs if run.purpose == "audit"]
    if not audit or plan.total_epsilon is None:
        return spent
    # Planned with the train run at its full length: never below what will be spent.
    return max(plan.total_epsilon, spent)


def _check_against_data(
    privacy: PrivacyParams, params: TrainParams, *, rows: int, source: Path
) -> None:
    """The params that are valid only relative to the training split's size, named as such."""
    if params.batch_size > rows:
        raise InputError(
            f"{PARAMS_FILE}: train.batch_size: {params.batch_size} exceeds the {rows} privacy "
            f"units (people or rows) of {source}; one batch would be the whole dataset every step"
        )
    resolved_delta(privacy, rows)


def unit_report(
    train: EncodedTable, unit: PrivacyUnit, population: str | None, epsilon: float, delta: float
) -> dict[str, object]:
    """privacy.json's statement of the unit of privacy and what the guarantee covers."""
    rows = len(train)
    index = None if train.people is None else PersonIndex.from_codes(train.people)
    report: dict[str, object] = {
        "unit": unit.value,
        "neighbouring": unit.neighbouring,
        "people": None if index is None else index.people,
        "rows": rows,
        "max_rows_per_person": None if index is None else index.max_rows_per_person,
        "population": population,
        "covers": {key: list(value) for key, value in COVERS.items()},
    }
    if unit is PrivacyUnit.RECORD and index is not None and math.isfinite(epsilon):
        group = group_privacy(epsilon, delta, index.max_rows_per_person)
        report["group_privacy"] = {
            "label": (
                f"record-level guarantee converted by group privacy to a person with "
                f"{group.rows} rows (the most any one person has)"
            ),
            "rows": group.rows,
            "epsilon": group.epsilon,
            "delta": group.delta,
        }
    return report


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
