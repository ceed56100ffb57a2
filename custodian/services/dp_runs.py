"""What every DP training run on a dataset shares: inputs from params, and its privacy charge.

The train stage (the released model) and the evaluate stage's audit run (never released)
both train with DP-SGD on the dataset's training split. Both go through
:func:`charged_train_dp`: plan the steps and calibrate the noise for the target epsilon,
refuse a run the dataset's lifetime budget cannot afford, and reserve every chunk of steps
in the privacy ledger and the audit log before taking it. A run's privacy spend is thus
composed with every other run on the same source data, whatever the run was for.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audits.files import atomic_write_json
from custodian.params import PARAMS_FILE, DataParams, PrivacyParams, TrainParams, load_section
from custodian.project import Project
from custodian.services import trail
from custodian.services.datasets import load_dataset
from governance.errors import InputError, PolicyViolation
from governance.provenance import ColumnRole as SchemaRole
from governance.provenance import ColumnSpec, ColumnType, Provenance
from governance.registry import load_registry
from privacy.accounting import (
    AccountantKind,
    SgdSteps,
    calibrate_noise,
    default_delta,
    epsilon_of,
    validate_delta,
)
from privacy.errors import PrivacyInputError
from privacy.ledger import DatasetSpend, PrivacyLedger
from privacy.unit import PrivacyUnit
from training.canaries import GradientCanaries
from training.errors import TrainingInputError
from training.features import ColumnRole, EncodedTable, FeatureSpec, encode_table
from training.model import Activation, Mlp, ModelConfig
from training.precision import Precision
from training.replicas import SINGLE, Replica
from training.trainer import (
    DpConfig,
    OptimizerKind,
    StepPlan,
    TrainConfig,
    TrainResult,
    person_index,
    plan_steps,
    train_dp,
)

DONE_MARKER = "done.json"


@dataclass(frozen=True, slots=True)
class ChargedRun:
    """A finished DP run and the privacy parameters it was charged under."""

    run_id: str
    run_dir: Path
    result: TrainResult
    dp: DpConfig
    plan: StepPlan
    target_epsilon: float


def feature_spec(column: ColumnSpec) -> FeatureSpec:
    """The training package's view of a provenance column."""
    return FeatureSpec(
        name=column.name,
        role=ColumnRole(column.role.value),
        minimum=column.minimum,
        maximum=column.maximum,
        categories=column.categories,
        nullable=column.nullable,
        free_text=column.type is ColumnType.text,
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


def train_config(params: TrainParams) -> TrainConfig:
    return TrainConfig(
        epochs=params.epochs,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        optimizer=OptimizerKind(params.optimizer),
        momentum=params.momentum,
        patience=params.patience,
        precision=Precision(params.precision),
        clipping=params.clipping,
        checkpoint_every=params.checkpoint_every,
        seed=params.seed,
    )


def model_config(params: TrainParams) -> ModelConfig:
    return ModelConfig(hidden=tuple(params.hidden), activation=Activation(params.activation))


def model_parameters(params: TrainParams, width: int) -> int:
    """How many parameters the model ``params`` describe has on ``width`` input features."""
    return sum(p.numel() for p in Mlp(model_config(params), width).parameters())


def charged_train_dp(
    train: EncodedTable,
    val: EncodedTable,
    params: TrainParams,
    privacy: PrivacyParams,
    *,
    dataset_sha256: str,
    population: str | None,
    purpose: str,
    identity: Mapping[str, object],
    device: torch.device,
    replica: Replica = SINGLE,
    canaries: GradientCanaries | None = None,
) -> ChargedRun:
    """DP-SGD on ``train`` at ``privacy.target_epsilon``, charged to ``population``'s
    lifetime budget (to ``dataset_sha256``'s when the dataset declares no population).

    ``purpose`` prefixes the run id (``train``, ``audit``); ``identity`` is what makes two
    runs the same run (an unfinished run with the same identity is resumed). With several
    replicas, only the leader opens the run in the ledger and reserves its steps; the
    followers train the same run without touching the ledger.
    """
    config, dp, plan = _plan(train, params, privacy)
    run_id, run_dir = _run(purpose, {**identity, "sigma": dp.noise_multiplier})
    if replica.leader:
        reserve, already_reserved = _open_in_ledger(
            dataset_sha256, population, run_id, dp, plan, privacy
        )
    else:
        reserve, already_reserved = _no_reservation, 0
    result = train_dp(
        train,
        val,
        model_config(params),
        config,
        dp,
        run_dir=run_dir,
        reserve_steps=reserve,
        already_reserved=already_reserved,
        device=device,
        replica=replica,
        canaries=canaries,
    )
    return ChargedRun(
        run_id=run_id,
        run_dir=run_dir,
        result=result,
        dp=dp,
        plan=plan,
        target_epsilon=privacy.target_epsilon,
    )


def finished_run(
    train: EncodedTable,
    params: TrainParams,
    privacy: PrivacyParams,
    *,
    purpose: str,
    identity: Mapping[str, object],
) -> Path | None:
    """The directory of the latest finished run with this identity, if any (nothing is charged).

    Lets a stage that reruns for reasons other than the run's mechanism (the evaluate
    stage after a change to its slices) reuse what the run produced instead of paying again.
    """
    _, dp, _ = _plan(train, params, privacy)
    prefix = _prefix({**identity, "sigma": dp.noise_multiplier})
    runs = Project.discover().evidence_dir / "runs"
    done = [
        path.parent
        for path in runs.glob(f"{purpose}-{prefix}-*/{DONE_MARKER}")
        if path.parent.name.rpartition("-")[2].isdigit()
    ]
    return max(done, key=lambda d: int(d.name.rpartition("-")[2]), default=None)


def mark_finished(run: ChargedRun) -> None:
    """Close the run once the caller has written what it produced.

    Until then a rerun with the same identity resumes it (from its last checkpoint, with
    every reserved step still counted) instead of starting, and paying for, a new run.
    """
    atomic_write_json(run.run_dir / DONE_MARKER, {"steps": run.result.accounted_steps})


def resolved_unit(train: EncodedTable, privacy: PrivacyParams) -> PrivacyUnit:
    """``privacy.unit``, or by default person whenever the dataset declares an identifier."""
    if privacy.unit is not None:
        return PrivacyUnit(privacy.unit)
    return PrivacyUnit.RECORD if train.people is None else PrivacyUnit.PERSON


def privacy_units(train: EncodedTable, privacy: PrivacyParams) -> int:
    """What sample rate and delta are over: people (``privacy.unit: person``) or rows."""
    try:
        people = person_index(train, resolved_unit(train, privacy))
    except TrainingInputError as err:
        raise InputError(f"{PARAMS_FILE}: privacy.unit: {err}") from None
    return len(train) if people is None else people.people


def resolved_delta(privacy: PrivacyParams, rows: int) -> float:
    """``privacy.delta``, or its default for ``rows`` privacy units (people or rows);
    refused at >= 1/rows."""
    delta = privacy.delta if privacy.delta is not None else default_delta(rows)
    try:
        validate_delta(delta, rows)
    except PrivacyInputError as err:
        field = "privacy.delta" if privacy.delta is not None else "privacy.delta (default)"
        raise InputError(f"{PARAMS_FILE}: {field}: {err}") from None
    return delta


def _plan(
    train: EncodedTable, params: TrainParams, privacy: PrivacyParams
) -> tuple[TrainConfig, DpConfig, StepPlan]:
    """The training config, the noise calibrated to the target epsilon, the step plan."""
    kind = AccountantKind.parse(privacy.accountant)
    units = privacy_units(train, privacy)
    delta = resolved_delta(privacy, units)
    config = train_config(params)
    plan = plan_steps(units, config.batch_size, config.epochs)
    sigma = calibrate_noise(privacy.target_epsilon, delta, plan.sample_rate, plan.total_steps, kind)
    dp = DpConfig(
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        delta=delta,
        accountant=kind,
        unit=resolved_unit(train, privacy),
    )
    return config, dp, plan


def _open_in_ledger(
    dataset_sha256: str,
    population: str | None,
    run_id: str,
    dp: DpConfig,
    plan: StepPlan,
    privacy: PrivacyParams,
) -> tuple[Callable[[int], None], int]:
    """Refuse a run the lifetime budget cannot afford; else its reservation callback."""
    sigma, kind, delta = dp.noise_multiplier, dp.accountant, dp.delta
    ledger = PrivacyLedger(Project.discover().privacy_ledger_path)
    handle = ledger.open_run(
        dataset_sha256,
        run_id,
        sigma,
        plan.sample_rate,
        kind,
        delta,
        lifetime_epsilon=privacy.lifetime_epsilon,
        population=population,
    )
    remaining = max(plan.total_steps - handle.steps, 0)
    ledger.check_budget(
        dataset_sha256,
        SgdSteps(sigma, plan.sample_rate, remaining),
        privacy.lifetime_epsilon,
        delta,
        kind,
        population,
    )

    def reserve(total_steps: int) -> None:
        handle.record_steps(total_steps)
        trail.record_privacy_spend(
            dataset_sha256, run_id, sigma, plan.sample_rate, total_steps, kind.value, delta
        )

    return reserve, handle.steps


def _no_reservation(total_steps: int) -> None:
    """A follower replica reserves nothing: its leader's ledger entry holds the run."""


def dataset_spent(
    dataset_sha256: str, delta: float, accountant: str, population: str | None = None
) -> float:
    """Epsilon spent on the dataset's population (or the dataset) so far, every run composed."""
    ledger = PrivacyLedger(Project.discover().privacy_ledger_path)
    return ledger.spent(dataset_sha256, delta, AccountantKind.parse(accountant), population)


def ledger_spends() -> tuple[DatasetSpend, ...]:
    """Epsilon spent per dataset, composed over every run on it (the project's ledger)."""
    return PrivacyLedger(Project.discover().privacy_ledger_path).summary()


def ledger_rows() -> list[dict[str, Any]]:
    """Every budget (population, or dataset without one) as JSON: its total, the registered
    names of its datasets, and each run's own epsilon beside the composed total."""
    names = _dataset_names()
    rows = []
    for spend in ledger_spends():
        kind = AccountantKind.parse(spend.accountant)
        row = spend.to_json()
        row["dataset"] = names.get(spend.dataset_sha256)
        row["dataset_names"] = [names.get(sha) for sha in spend.datasets]
        for run, entry in zip(spend.runs, row["runs"], strict=True):
            alone = SgdSteps(run.noise_multiplier, run.sample_rate, run.steps)
            entry["epsilon"] = epsilon_of([alone], spend.delta, kind)
        rows.append(row)
    return rows


def _dataset_names() -> dict[str, str]:
    """Registered datasets by hash; the ledger keys spend by the data's hash."""
    try:
        entries = load_registry(load_section(DataParams, "data").registry)
    except (InputError, PolicyViolation):
        return {}
    return {entry.record.sha256: entry.name for entry in entries}


def _run(purpose: str, identity: Mapping[str, object]) -> tuple[str, Path]:
    """This configuration's unfinished run (to resume it), or a new run after the finished ones."""
    prefix = _prefix(identity)
    runs = Project.discover().evidence_dir / "runs"
    for attempt in itertools.count(1):
        run_id = f"{purpose}-{prefix}-{attempt}"
        if not (runs / run_id / DONE_MARKER).exists():
            return run_id, runs / run_id
    raise AssertionError("itertools.count never ends")


def _prefix(identity: Mapping[str, object]) -> str:
    digest = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(digest.encode()).hexdigest()[:16]
