"""DP-SGD training of the tabular model, in mixed precision, resumable.

:func:`train_dp` reads top to bottom: build the model and optimizer, pick the clipping
engine (:mod:`training.private_steps`: Custodian's fast engine by default, or Opacus'
hooks or ghost clipping; Poisson sampling always, as the accountants assume), restore the
last checkpoint if the run directory holds one, then run epochs of DP-SGD steps with early
stopping on the validation loss. :func:`train_non_private` trains the
same model on the same data without DP, as the utility baseline.

Accounting: reserve, then spend
    Before taking a chunk of ``k`` steps the trainer calls ``reserve_steps(total)`` with
    the run's accounted total *after* the chunk (the caller durably records it in the
    budget ledger and may refuse), then records the same total in the run directory's
    ``reserved.json``, and only then takes the steps. A crash can only over-count.

    Resume rule: a rerun with the same run directory restores the model, optimizer, loss
    scale and training progress from the last checkpoint, but its accounted step count
    starts at the *largest* of the checkpoint's count, ``reserved.json`` and the caller's
    ``already_reserved`` (the ledger's count for this run). Steps re-executed from the
    checkpoint are counted again, on top. So every step taken before the crash, including
    those after the last checkpoint, stays in the returned history; the over-count is at
    most the steps between the last checkpoint and the last reservation. The accounted
    totals passed to ``reserve_steps`` are cumulative over the whole run, as
    ``privacy.ledger.LedgerRun.record_steps`` expects.

    Every step counts, including steps whose Poisson batch is empty. No step is skipped:
    a record with a non-finite per-sample gradient contributes zero (see
    :mod:`training.precision`), so nothing about the step depends on it. The history
    returned is ``[SgdSteps(noise_multiplier, sample_rate, accounted_steps)]``; epsilon is
    composed from it by :func:`privacy.accounting.epsilon_of`, independent of the
    Opacus accountant (which the trainer only cross-checks its own count against).

What DP covers here, and what it does not
    - The model weights are the DP release. The fast engine's Gaussian noise comes from
      ChaCha20 keyed by the OS (:mod:`privacy.secure_gaussian`: float64, tails beyond 8
      sigma); Poisson sampling draws from a torch generator seeded from the OS's entropy.
      Neither is seeded from ``TrainConfig.seed`` (a public seed would let anyone replay
      the batches and subtract the noise) or saved in checkpoints. The noise is rounded
      to fp32 once, where it is added; Opacus' floating-point-attack mitigation
      (``secure_mode``, which needs ``torchcsprng``) is not used.
    - The per-epoch *training* loss is computed from private records outside the DP
      mechanism: it is a diagnostic for the operator, not something to publish.
    - Early stopping and best-epoch selection use the validation split, which DP does not
      protect.
    - fp16's loss scale is fixed for the run and no step is ever skipped. How many records
      had a non-finite gradient (and so contributed zero) is counted in
      ``TrainResult.nonfinite_records`` and the run directory's checkpoint: a diagnostic
      for the operator, computed outside the mechanism, never in the released reports.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from privacy.accounting import AccountantKind, SgdSteps, check_delta, epsilon_of
from privacy.errors import PrivacyInputError
from privacy.sampling import PersonIndex
from privacy.unit import PrivacyUnit
from training.canaries import GradientCanaries
from training.checkpoint import (
    Checkpoint,
    capture_optimizer,
    capture_rng,
    load_checkpoint,
    read_reservation,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
    write_reservation,
)
from training.errors import TrainingError, TrainingInputError
from training.features import EncodedTable
from training.model import Mlp, ModelConfig
from training.precision import LossScaler, Precision, PrecisionStrategy, precision_strategy
from training.private_steps import ClippingMode, StepOutcome, StepSetup, private_stepper
from training.replicas import SINGLE, Replica, broadcast_parameters

__all__ = [
    "DpConfig",
    "EpochRecord",
    "OptimizerKind",
    "ReserveSteps",
    "StepPlan",
    "TrainConfig",
    "TrainResult",
    "person_index",
    "plan_steps",
    "train_dp",
    "train_non_private",
]

ReserveSteps = Callable[[int], None]
"""Called with the run's accounted step total after the next chunk, before the chunk runs."""

# Rows per forward pass when computing the validation loss.
_EVAL_BATCH = 8192
# TrainConfig fields that change how a run is carried out, not what it computes: a
# resumed run may change them.
_OPERATIONAL_FIELDS = frozenset({"checkpoint_every", "reserve_chunk"})


class OptimizerKind(StrEnum):
    """Optimizers the trainer builds."""

    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything about a training run except privacy; validated as a whole on construction.

    ``batch_size`` is the *expected* batch size: DP training samples each record with
    probability ``sample_rate`` (see :func:`plan_steps`). ``patience`` is the number of
    epochs without a validation-loss improvement of more than ``min_delta`` before
    stopping (None: run every epoch). ``max_physical_batch_size`` splits large Poisson
    batches into physical batches (Opacus' ``BatchMemoryManager`` under Opacus clipping).
    ``clipping`` picks the per-sample clipping engine. ``checkpoint_every`` is in steps (every
    epoch end checkpoints too); ``reserve_chunk`` is how many steps one reservation covers.
    ``seed`` drives model initialisation and dropout only.
    """

    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.1
    optimizer: OptimizerKind = OptimizerKind.SGD
    momentum: float = 0.0
    weight_decay: float = 0.0
    patience: int | None = 3
    min_delta: float = 0.0
    precision: Precision = Precision.FP32
    max_physical_batch_size: int | None = None
    clipping: ClippingMode = ClippingMode.FAST
    checkpoint_every: int = 200
    reserve_chunk: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            *_positive_ints(self, "epochs", "batch_size", "checkpoint_every", "reserve_chunk"),
            *_enum_field(self, "optimizer", OptimizerKind),
            *_enum_field(self, "precision", Precision),
            *_enum_field(self, "clipping", ClippingMode),
        ]
        if not _is_real(self.learning_rate) or not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("weight_decay", "min_delta"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                problems.append(f"{name} must be >= 0, got {value!r}")
        for name in ("patience", "max_physical_batch_size"):
            value = getattr(self, name)
            if value is not None and not _is_positive_int(value):
                problems.append(f"{name} must be a positive integer or null, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if problems:
            raise TrainingInputError("invalid training config: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class DpConfig:
    """DP-SGD parameters. The noise multiplier is an input: the caller calibrates it.

    ``unit``: ``person`` samples people and clips each person's summed gradient (the
    training table must carry person codes); ``record`` samples and clips rows.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: AccountantKind = AccountantKind.PRV
    unit: PrivacyUnit = PrivacyUnit.RECORD

    def __post_init__(self) -> None:
        problems = []
        if not _is_real(self.noise_multiplier) or not self.noise_multiplier > 0:
            problems.append(
                f"noise_multiplier must be > 0 (zero noise is not DP), got "
                f"{self.noise_multiplier!r}"
            )
        if not _is_real(self.max_grad_norm) or not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        try:
            check_delta(self.delta)
            object.__setattr__(self, "accountant", AccountantKind.parse(self.accountant))
        except PrivacyInputError as err:
            problems.append(str(err))
        problems += _enum_field(self, "unit", PrivacyUnit)
        if problems:
            raise TrainingInputError("invalid DP config: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Opacus' Poisson sampling for ``rows`` records at an expected ``batch_size``."""

    sample_rate: float
    steps_per_epoch: int
    epochs: int

    @property
    def total_steps(self) -> int:
        """Steps if no epoch stops early: what to calibrate the noise multiplier for."""
        return self.steps_per_epoch * self.epochs


def person_index(table: EncodedTable, unit: PrivacyUnit) -> PersonIndex | None:
    """The rows of each person for person-level DP (None at record level).

    The privacy unit count, what the sample rate and delta are over, is
    ``index.people`` under ``person`` and ``len(table)`` under ``record``.
    """
    if PrivacyUnit(unit) is PrivacyUnit.RECORD:
        return None
    if table.people is None:
        raise TrainingInputError(
            "privacy.unit person needs the dataset's identifier column (none is declared); "
            "declare one, or opt in to privacy.unit record"
        )
    if len(table.people) != len(table) or bool((table.people < 0).any()):
        raise TrainingInputError(
            "privacy.unit person needs the person of every row; the identifier column has "
            f"{int((table.people < 0).sum())} missing values"
        )
    return PersonIndex.from_codes(table.people)


def plan_steps(rows: int, batch_size: int, epochs: int) -> StepPlan:
    """The sample rate and steps ``train_dp`` will use, computed exactly as Opacus does.

    ``rows`` is the number of privacy units (people under person-level DP) and
    ``batch_size`` the expected units per step.

    ``make_private`` sets ``sample_rate = 1 / len(data_loader)``, i.e. one over the number
    of fixed-size batches, and its sampler takes ``int(1 / sample_rate)`` steps an epoch.
    """
    for name, value in (("rows", rows), ("batch_size", batch_size), ("epochs", epochs)):
        if not _is_positive_int(value):
            raise TrainingInputError(f"{name} must be a positive integer, got {value!r}")
    sample_rate = 1 / math.ceil(rows / batch_size)
    return StepPlan(sample_rate=sample_rate, steps_per_epoch=int(1 / sample_rate), epochs=epochs)


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """One epoch: steps and epsilon after it, mean losses, seconds spent on training steps.

    ``steps`` is the accounted step count for DP runs (the step count without DP).

    ``train_loss`` is not private (see the module notes); epsilon is ``inf`` without DP.
    """

    epoch: int
    steps: int
    train_loss: float
    val_loss: float
    epsilon: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a training run produced.

    ``model`` holds the best epoch's weights (on CPU). ``steps`` counts the DP-SGD
    iterations in that model's trajectory; ``accounted_steps`` (>= ``steps`` after a
    resume) is what ``history`` charges. ``epsilon`` is ``inf`` for a non-private run.
    """

    model: Mlp
    steps: int
    accounted_steps: int
    epochs: int
    history: tuple[SgdSteps, ...]
    curve: tuple[EpochRecord, ...]
    nonfinite_records: int
    best_epoch: int
    stopped_early: bool
    resumed_from_step: int
    sample_rate: float
    epsilon: float


def train_dp(
    train: EncodedTable,
    val: EncodedTable,
    model_config: ModelConfig,
    config: TrainConfig,
    dp: DpConfig,
    *,
    run_dir: Path,
    reserve_steps: ReserveSteps,
    already_reserved: int = 0,
    device: torch.device | None = None,
    progress: bool | None = None,
    replica: Replica = SINGLE,
    canaries: GradientCanaries | None = None,
) -> TrainResult:
    """Train with DP-SGD; resume from ``run_dir``'s checkpoint if it holds one.

    ``canaries``: gradient canaries for a white-box audit run (never for a released model).

    ``already_reserved``: the steps the caller's ledger already holds for this run (0 for a
    new run). ``progress``: show a progress bar (None: only on a terminal). ``replica``:
    this process's place in data-parallel training (:mod:`training.replicas`); only the
    leader calls ``reserve_steps`` and writes ``run_dir``, every replica reads it to resume.
    """
    device = device if device is not None else torch.device("cpu")
    strategy = precision_strategy(config.precision, device)
    _check_tables(train, val)
    _check_dp_inputs(already_reserved)
    replica.check_initialised()
    if not replica.leader:
        reserve_steps = _follower_reserve
    people = person_index(train, dp.unit)
    units = len(train) if people is None else people.people
    plan = plan_steps(units, config.batch_size, config.epochs)
    identity = _run_identity(train, model_config, config, dp)

    torch.manual_seed(config.seed)
    model = Mlp(model_config, train.width).to(device)
    optimizer = _build_optimizer(model.parameters(), config)
    scaler = LossScaler(enabled=strategy.loss_scaling)
    stepper = private_stepper(
        config.clipping,
        StepSetup(
            model=model,
            optimizer=optimizer,
            train=train,
            batch_size=config.batch_size,
            sample_rate=plan.sample_rate,
            steps_per_epoch=plan.steps_per_epoch,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            accountant=dp.accountant.value,
            strategy=strategy,
            scaler=scaler,
            device=device,
            max_physical_batch_size=config.max_physical_batch_size,
            replica=replica,
            people=people,
            canaries=canaries,
        ),
    )
    state = _restore(run_dir, identity, model, optimizer, scaler)
    state.begin_session(max(read_reservation(run_dir), already_reserved))
    broadcast_parameters(model, replica)
    save = _save if replica.leader else _follower_save

    run_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=plan.total_steps,
        initial=state.step,
        disable=_bar_disabled(progress) if replica.leader else True,
    )
    try:
        while not state.done(config):
            started = time.perf_counter()
            # Fresh Poisson draws; a resumed epoch takes only the steps it has left.
            batches = stepper.epoch()
            for _ in _epoch_steps(state, plan, config, run_dir, reserve_steps, replica):
                state.take(stepper.step(batches))
                bar.set_postfix(loss=f"{state.running_loss():.4f}", eps=state.last_epsilon())
                bar.update(1)
                if state.step % config.checkpoint_every == 0:
                    save(run_dir, identity, state, model, optimizer, scaler)
            state.epoch_seconds += time.perf_counter() - started
            epsilon = epsilon_of(state.history(dp, plan), dp.delta, dp.accountant)
            state.end_epoch(_mean_loss(model, val, strategy, device), epsilon, model, config)
            save(run_dir, identity, state, model, optimizer, scaler)
            bar.set_postfix(loss=f"{state.curve[-1].train_loss:.4f}", eps=f"{epsilon:.3f}")
    finally:
        stepper.close()
        bar.close()
    stepper.check_accounting(state.step - state.resumed_from_step)
    history = state.history(dp, plan)
    return state.result(
        model_config, train.width, history, plan.sample_rate, _final_epsilon(state, history, dp)
    )


def train_non_private(
    train: EncodedTable,
    val: EncodedTable,
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """The utility baseline: the same model, optimizer, precision and early stopping, no DP.

    Batches are fixed-size slices of a shuffled order; no checkpoints.
    """
    device = device if device is not None else torch.device("cpu")
    strategy = precision_strategy(config.precision, device)
    _check_tables(train, val)
    torch.manual_seed(config.seed)
    model = Mlp(model_config, train.width).to(device)
    optimizer = _build_optimizer(model.parameters(), config)
    scaler = torch.amp.GradScaler(device.type, enabled=strategy.loss_scaling)
    state = _State()
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    bar = tqdm(total=steps_per_epoch * config.epochs, disable=_bar_disabled(progress))
    while not state.done(config):
        started = time.perf_counter()
        order = torch.randperm(len(train))
        for batch in order.split(config.batch_size):
            features, labels = train.features[batch].to(device), train.labels[batch].to(device)
            with strategy.autocast(device):
                loss = functional.cross_entropy(model(features), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.take(StepOutcome(float(loss.detach()) * len(batch), len(batch)))
            bar.set_postfix(loss=f"{state.running_loss():.4f}")
            bar.update(1)
        state.epoch_seconds += time.perf_counter() - started
        state.end_epoch(_mean_loss(model, val, strategy, device), math.inf, model, config)
    bar.close()
    return state.result(model_config, train.width, (), 1.0, math.inf)


@dataclass(slots=True)
class _State:
    """Training progress: everything a checkpoint must restore besides tensors."""

    step: int = 0
    accounted: int = 0
    reserved: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    epoch_seconds: float = 0.0
    nonfinite_records: int = 0
    best_val: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    resumed_from_step: int = 0
    curve: list[EpochRecord] = field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None

    def begin_session(self, reserved_elsewhere: int) -> None:
        """Apply the resume rule: count on from the highest reservation anyone recorded."""
        self.accounted = max(self.accounted, self.reserved, reserved_elsewhere)
        self.reserved = self.accounted
        self.resumed_from_step = self.step

    def done(self, config: TrainConfig) -> bool:
        return self.stopped_early or self.epoch >= config.epochs

    def take(self, outcome: StepOutcome) -> None:
        self.step += 1
        self.accounted += 1
        self.step_in_epoch += 1
        self.nonfinite_records += outcome.nonfinite_records
        self.epoch_loss_sum += outcome.loss_sum
        self.epoch_samples += outcome.samples

    def running_loss(self) -> float:
        return self.epoch_loss_sum / self.epoch_samples if self.epoch_samples else math.nan

    def last_epsilon(self) -> str:
        return f"{self.curve[-1].epsilon:.3f}" if self.curve else "-"

    def history(self, dp: DpConfig, plan: StepPlan) -> tuple[SgdSteps, ...]:
        if not self.accounted:
            return ()
        return (SgdSteps(dp.noise_multiplier, plan.sample_rate, self.accounted),)

    def end_epoch(self, val_loss: float, epsilon: float, model: Mlp, config: TrainConfig) -> None:
        """Record the epoch and apply early stopping; the best weights are kept in memory."""
        self.epoch += 1
        self.curve.append(
            EpochRecord(
                epoch=self.epoch,
                steps=self.accounted,
                train_loss=self.running_loss(),
                val_loss=val_loss,
                epsilon=epsilon,
                seconds=self.epoch_seconds,
            )
        )
        improved = not math.isnan(val_loss) and (
            self.best_val is None or val_loss < self.best_val - config.min_delta
        )
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
            self.stopped_early = config.patience is not None and self.bad_epochs >= config.patience
        self.step_in_epoch, self.epoch_loss_sum, self.epoch_samples = 0, 0.0, 0
        self.epoch_seconds = 0.0

    def result(
        self,
        model_config: ModelConfig,
        width: int,
        history: tuple[SgdSteps, ...],
        sample_rate: float,
        epsilon: float,
    ) -> TrainResult:
        model = Mlp(model_config, width)
        if self.best_weights is None:
            raise TrainingError("no epoch produced a finite validation loss; nothing to return")
        model.load_state_dict({k: v.cpu() for k, v in self.best_weights.items()})
        model.eval()
        return TrainResult(
            model=model,
            steps=self.step,
            accounted_steps=sum(entry.steps for entry in history),
            epochs=self.epoch,
            history=history,
            curve=tuple(self.curve),
            nonfinite_records=self.nonfinite_records,
            best_epoch=self.best_epoch,
            stopped_early=self.stopped_early,
            resumed_from_step=self.resumed_from_step,
            sample_rate=sample_rate,
            epsilon=epsilon,
        )

    def to_json(self) -> dict[str, Any]:
        data = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in {"curve", "best_weights"}
        }
        data["curve"] = [_record_json(record) for record in self.curve]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], best: dict[str, torch.Tensor] | None) -> _State:
        values = dict(data)
        curve = [_record_from_json(record) for record in values.pop("curve")]
        state = cls(**values, curve=curve, best_weights=best)
        names = ("step", "accounted", "reserved", "epoch", "step_in_epoch", "nonfinite_records")
        for name in names:
            if not isinstance(getattr(state, name), int) or getattr(state, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        return state


def _record_json(record: EpochRecord) -> dict[str, Any]:
    # JSON has no NaN or infinity: non-finite values are written as null.
    return {
        k: v if not isinstance(v, float) or math.isfinite(v) else None
        for k, v in asdict(record).items()
    }


def _record_from_json(data: Mapping[str, Any]) -> EpochRecord:
    return EpochRecord(**{k: math.nan if v is None else v for k, v in data.items()})


def _epoch_steps(
    state: _State,
    plan: StepPlan,
    config: TrainConfig,
    run_dir: Path,
    reserve: ReserveSteps,
    replica: Replica,
) -> Iterator[None]:
    """Yield once per step left in the epoch, reserving each chunk before it starts.

    With several replicas only the leader reserves; the others cannot complete a step
    without the leader's share of the all-reduce, which it adds after reserving.
    """
    while state.step_in_epoch < plan.steps_per_epoch:
        if state.accounted == state.reserved:
            chunk = min(config.reserve_chunk, plan.steps_per_epoch - state.step_in_epoch)
            reserve(state.accounted + chunk)  # the caller's ledger first: it may refuse
            if replica.leader:
                write_reservation(run_dir, state.accounted + chunk)
            state.reserved = state.accounted + chunk
        yield


def _follower_reserve(total_steps: int) -> None:
    """Replicas other than the leader reserve nothing: the leader's ledger holds the run."""


def _follower_save(*args: object) -> None:
    """Replicas other than the leader write no checkpoints: the leader's holds the run."""


def _restore(
    run_dir: Path,
    identity: dict[str, Any],
    model: Mlp,
    optimizer: torch.optim.Optimizer,
    scaler: LossScaler,
) -> _State:
    """The checkpointed state loaded into the model, optimizer and scaler, or a fresh one."""
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return _State()
    where = run_dir / "checkpoint.json"
    _check_identity(where, checkpoint.meta.get("run"), identity)
    tensors = checkpoint.tensors
    try:
        model.load_state_dict(_section(tensors, "model."))
        restore_optimizer(
            optimizer,
            {k: v for k, v in tensors.items() if k.startswith("optimizer.")},
            checkpoint.meta["optimizer"],
        )
        scaler.load_state_dict(checkpoint.meta["scaler"])
        best = _section(tensors, "best.")
        state = _State.from_json(checkpoint.meta["state"], best or None)
        restore_rng(tensors, checkpoint.meta["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise TrainingInputError(f"{where}: malformed checkpoint ({err!r})") from err
    return state


def _save(
    run_dir: Path,
    identity: dict[str, Any],
    state: _State,
    model: Mlp,
    optimizer: torch.optim.Optimizer,
    scaler: LossScaler,
) -> None:
    optimizer_state = capture_optimizer(optimizer)
    rng = capture_rng()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (state.best_weights or {}).items()})
    tensors.update(optimizer_state.tensors)
    tensors.update(rng.tensors)
    meta = {
        "run": identity,
        "state": state.to_json(),
        "optimizer": optimizer_state.meta,
        "scaler": scaler.state_dict(),
        "rng": rng.meta,
    }
    save_checkpoint(run_dir, Checkpoint(tensors=tensors, meta=meta))


def _section(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _run_identity(
    train: EncodedTable, model_config: ModelConfig, config: TrainConfig, dp: DpConfig
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: configs and a digest of the data."""
    digest = hashlib.sha256()
    digest.update(train.features.numpy().tobytes())
    digest.update(train.labels.numpy().tobytes())
    if dp.unit is PrivacyUnit.PERSON and train.people is not None:
        digest.update(train.people.numpy().tobytes())
    digest.update("\0".join(train.feature_names).encode())
    train_config = {k: v for k, v in config.to_json().items() if k not in _OPERATIONAL_FIELDS}
    return {
        "model": model_config.to_json(),
        "train": train_config,
        "dp": dp.to_json(),
        "data": {"rows": len(train), "width": train.width, "sha256": digest.hexdigest()},
    }


def _check_identity(where: Path, saved: object, identity: dict[str, Any]) -> None:
    if not isinstance(saved, dict):
        raise TrainingInputError(f"{where}: malformed checkpoint (no run identity)")
    changed = sorted(
        f"{section}.{key}"
        for section, values in identity.items()
        for key in values
        if not isinstance(saved.get(section), dict) or saved[section].get(key) != values[key]
    )
    if changed:
        raise TrainingInputError(
            f"{where} belongs to a different run (changed: {', '.join(changed)}); "
            "restore those settings or use a new run directory"
        )


def _check_tables(train: EncodedTable, val: EncodedTable) -> None:
    problems = []
    for name, table in (("training", train), ("validation", val)):
        if len(table) == 0:
            problems.append(f"the {name} split is empty")
        if table.features.shape != (len(table), table.width):
            problems.append(f"the {name} features do not match their names and labels")
    if train.feature_names != val.feature_names:
        problems.append("training and validation splits have different feature layouts")
    if problems:
        raise TrainingInputError("; ".join(problems))


def _check_dp_inputs(reserved: int) -> None:
    if not isinstance(reserved, int) or isinstance(reserved, bool) or reserved < 0:
        raise TrainingInputError(f"already_reserved must be an integer >= 0, got {reserved!r}")


def _final_epsilon(state: _State, history: tuple[SgdSteps, ...], dp: DpConfig) -> float:
    # A resumed run may account for more steps than its last epoch record saw.
    if state.curve and state.curve[-1].steps == state.accounted:
        return state.curve[-1].epsilon
    return epsilon_of(history, dp.delta, dp.accountant)


@torch.no_grad()
def _mean_loss(
    model: Mlp, table: EncodedTable, strategy: PrecisionStrategy, device: torch.device
) -> float:
    model.eval()
    total = 0.0
    for features, labels in zip(
        table.features.split(_EVAL_BATCH), table.labels.split(_EVAL_BATCH), strict=True
    ):
        with strategy.autocast(device):
            logits = model(features.to(device))
        total += float(functional.cross_entropy(logits.float(), labels.to(device), reduction="sum"))
    model.train()
    return total / len(table)


def _build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    return _OPTIMIZERS[config.optimizer](params, config)


_OPTIMIZERS: Mapping[
    OptimizerKind, Callable[[Iterable[nn.Parameter], TrainConfig], torch.optim.Optimizer]
] = MappingProxyType(
    {
        OptimizerKind.SGD: lambda params, config: torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        ),
        OptimizerKind.ADAM: lambda params, config: torch.optim.Adam(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        ),
    }
)


def _bar_disabled(progress: bool | None) -> bool | None:
    # tqdm reads None as "disable unless writing to a terminal".
    return None if progress is None else not progress


def _plain(value: object) -> object:
    if isinstance(value, StrEnum):
        return value.value
    return value


def _enum_field(config: object, name: str, kind: type[StrEnum]) -> list[str]:
    try:
        object.__setattr__(config, name, kind(getattr(config, name)))
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        return [f"unknown {name} {getattr(config, name)!r} (valid: {valid})"]
    return []


def _positive_ints(config: object, *names: str) -> list[str]:
    return [
        f"{name} must be a positive integer, got {getattr(config, name)!r}"
        for name in names
        if not _is_positive_int(getattr(config, name))
    ]


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
