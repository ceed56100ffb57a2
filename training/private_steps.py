"""DP-SGD steps under each clipping engine, behind one small interface.

``train.clipping`` picks one:

``fast`` (default)
    :mod:`privacy.clipping`'s one-backward-pass engine with vectorised Poisson sampling
    over the in-memory rows (:mod:`privacy.sampling`). Same mechanism as Opacus: Poisson
    sampling, flat clipping at ``max_grad_norm``, Gaussian noise of std
    ``noise_multiplier * max_grad_norm``, normalised by Opacus' expected batch size.
``opacus-hooks``
    Opacus' ``make_private`` with per-sample gradients from its hooks, and its
    Poisson-sampling DataLoader: the reference the fast engine is tested against.
``opacus-ghost``
    Opacus' ghost clipping (two backward passes), for :class:`training.model.Mlp` only
    (``nn.Linear`` on 2-D rows): on sequences its fp32 ghost norms cancel and a record's
    contribution can reach many times ``max_grad_norm``. fp32 only: Opacus computes its
    norms in the autocast dtype, and a bf16 norm may under-estimate by ~0.4%.

Person-level DP (``privacy.unit: person``) runs on ``fast`` only: it samples people with
Poisson sampling (each person's rows all in or all out of a step) and hands the engine a
people x rows x features batch, so each person's rows are one "sequence": one gradient,
summed over the rows, clipped once (the engine's sequence path, with its safe norms).
Padding positions get no loss, hence a zero output gradient, and add nothing. Opacus
samples and clips records only and is refused there.

Every engine counts each step it takes (including empty Poisson batches) in an Opacus
accountant of the run's kind; the trainer cross-checks that count against its own before
reporting epsilon. No step is ever skipped: a record whose per-sample gradient is not
finite contributes zero (``fast`` and ``opacus-hooks``; see :mod:`training.precision`).

Noise: ``fast`` draws it from :class:`privacy.noise.GaussianNoise` (ChaCha20 keyed by the
OS, float64 with full tails). The Opacus modes use Opacus' own sampler (torch's, seeded
from the OS, not a CSPRNG): they are references, not the default.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.accountants.accountant import IAccountant
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, Dataset

from privacy.clipping import ClippingEngine
from privacy.noise import GaussianNoise
from privacy.sampling import PersonIndex, PoissonSampler, entropy_generator
from training.canaries import GradientCanaries
from training.errors import TrainingError, TrainingInputError
from training.features import EncodedTable
from training.model import Mlp
from training.precision import LossScaler, PrecisionStrategy
from training.replicas import SINGLE, Replica, all_reduce_sum

__all__ = [
    "ClippingMode",
    "PaddedGather",
    "PrivateStepper",
    "StepOutcome",
    "StepSetup",
    "noisy_update",
    "private_stepper",
    "row_multiple",
]


class ClippingMode(StrEnum):
    """How per-sample gradients are clipped (``train.clipping``)."""

    FAST = "fast"
    OPACUS_HOOKS = "opacus-hooks"
    OPACUS_GHOST = "opacus-ghost"


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """One logical DP-SGD step, diagnostics only (not private): the summed finite losses,
    the samples, and how many records contributed zero for a non-finite gradient."""

    loss_sum: float
    samples: int
    nonfinite_records: int = 0


@dataclass(frozen=True, slots=True)
class StepSetup:
    """What every engine needs: the model, its plain optimizer, the data and the mechanism."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train: EncodedTable
    batch_size: int
    sample_rate: float
    steps_per_epoch: int
    noise_multiplier: float
    max_grad_norm: float
    accountant: str
    strategy: PrecisionStrategy
    scaler: LossScaler
    device: torch.device
    max_physical_batch_size: int | None
    replica: Replica = SINGLE
    canaries: GradientCanaries | None = None  # white-box audit runs only (fast engine)
    # Person-level DP: the rows of each person; None samples and clips records.
    people: PersonIndex | None = None


class PrivateStepper(Protocol):
    """Takes DP-SGD steps; the trainer owns the loop, checkpoints and accounting."""

    def epoch(self) -> Iterator[object]:
        """A fresh epoch's batches (Poisson draws) to pass to :meth:`step`."""
        ...

    def step(self, batches: Iterator[object]) -> StepOutcome:
        """Take one logical step from ``batches``."""
        ...

    def check_accounting(self, steps: int) -> None:
        """Fail closed unless the engine's accountant counted exactly ``steps`` steps."""
        ...

    def close(self) -> None:
        """Release hooks and memory managers."""
        ...


# oneDNN's bf16 kernels on CPU run about a fifth slower on odd row counts than on
# multiples of 32 (bench/bench_dp.py, fast_bf16); in fp32 padding only adds rows.
_LOW_PRECISION_CPU_ROW_MULTIPLE = 32


def row_multiple(compute_dtype: torch.dtype, device: torch.device) -> int:
    """The row count Poisson batches are padded up to a multiple of (1: no padding)."""
    if device.type == "cpu" and compute_dtype != torch.float32:
        return _LOW_PRECISION_CPU_ROW_MULTIPLE
    return 1


class PaddedGather:
    """Gathers a batch of in-memory rows, the features padded with zero rows up to a
    multiple of ``multiple`` rows; the labels are the real rows' only.

    The caller keeps only the first ``len(labels)`` outputs for the loss, so a padding
    row gets a zero output gradient: it adds nothing to any norm or sum, and rows do
    not interact in the forward pass (the clipping engine's own assumption).
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, multiple: int) -> None:
        self.multiple = multiple
        self._pad_row = len(features)
        if multiple > 1:
            features = torch.cat([features, features.new_zeros(1, *features.shape[1:])])
        self._features, self._labels = features, labels

    def __call__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self._labels.index_select(0, index)
        short = -len(index) % self.multiple
        if short:
            index = torch.cat([index, index.new_full((short,), self._pad_row)])
        return self._features.index_select(0, index), labels


def noisy_update(
    engine: ClippingEngine,
    normaliser: int,
    optimizer: torch.optim.Optimizer,
    replica: Replica = SINGLE,
) -> None:
    """The DP-SGD update from the engine's noised clipped sums.

    The sums of all replicas (only the leader's engine adds noise) are added up and
    divided by Opacus' normaliser, the global expected batch size; then the optimizer
    steps.
    """
    flat = all_reduce_sum(engine.take_flat(), replica).div_(normaliser)
    for param, grad in engine.unflatten(flat):
        param.grad = grad if grad.dtype == param.dtype else grad.to(param.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def private_stepper(mode: ClippingMode, setup: StepSetup) -> PrivateStepper:
    """The stepper for ``mode``; refuses combinations that would weaken the guarantee."""
    return _STEPPERS[ClippingMode(mode)](setup)


class _FastStepper:
    """:class:`privacy.clipping.ClippingEngine` over vectorised Poisson draws.

    With several replicas (:mod:`training.replicas`) each samples its shard of the rows
    (every ``world_size``-th row from its rank on) at the global rate; the clipped sums
    are all-reduced, with the noise drawn once, by rank 0.
    """

    def __init__(self, setup: StepSetup) -> None:
        self._setup = setup
        replica = setup.replica
        if setup.people is None:
            shard = torch.arange(replica.rank, len(setup.train), replica.world_size)
            self._gather: Callable[[torch.Tensor], _Batch] = _row_batches(setup, shard)
            units = len(setup.train)
            shard_units = len(shard)
        else:  # replicas shard by person: a person's rows meet in one clipped sum
            people = setup.people.shard(replica.rank, replica.world_size)
            self._gather = _person_batches(setup, people)
            units, shard_units = setup.people.people, people.people
        self._sampler = PoissonSampler(shard_units, setup.sample_rate, entropy_generator())
        if self._sampler.steps_per_epoch != setup.steps_per_epoch:
            raise TrainingError(
                f"the sampler takes {self._sampler.steps_per_epoch} steps per epoch, the plan "
                f"{setup.steps_per_epoch}"
            )
        # Opacus' normaliser, for the global expected batch (of records or of people).
        self._normaliser = int(units * setup.sample_rate)
        noise = GaussianNoise(setup.noise_multiplier * setup.max_grad_norm)
        if setup.canaries is not None:
            parameters = sum(p.numel() for p in setup.model.parameters() if p.requires_grad)
            if setup.canaries.coordinates.max(initial=-1) >= parameters:
                raise TrainingInputError("a gradient canary lies outside the model's parameters")
            noise = setup.canaries.noise(noise, setup.sample_rate, setup.max_grad_norm)
        self._engine = ClippingEngine(
            setup.model,
            max_grad_norm=setup.max_grad_norm,
            noise=noise if replica.leader else None,  # noise once for the global batch
        )
        self._accountant = create_accountant(setup.accountant)

    def epoch(self) -> Iterator[torch.Tensor]:
        return self._sampler.epoch()

    def step(self, batches: Iterator[object]) -> StepOutcome:
        index = next(batches, None)
        if not isinstance(index, torch.Tensor):
            raise TrainingError("the Poisson sampler ran out of batches within an epoch")
        setup, scaler, replica = self._setup, self._setup.scaler, self._setup.replica
        index = index.to(setup.device)
        chunk = setup.max_physical_batch_size or max(1, len(index))
        loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
        dropped = samples = 0
        for part in index.split(chunk) if len(index) else [index]:
            batch = self._gather(part)
            with self._engine.capture(), setup.strategy.autocast(setup.device):
                logits = setup.model(batch.features)
            losses = batch.unit_losses(logits)
            dropped += self._engine.accumulate(scaler.scale_loss(losses), loss_scale=scaler.scale)
            loss_sum += losses.detach().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0).sum()
            samples += batch.rows
        noisy_update(self._engine, self._normaliser, setup.optimizer, replica)
        self._count()
        counts = loss_sum.new_tensor([samples, dropped])
        totals = all_reduce_sum(torch.cat([loss_sum.view(1), counts]), replica)
        return StepOutcome(float(totals[0]), int(totals[1]), int(totals[2]))

    def _count(self) -> None:
        self._accountant.step(
            noise_multiplier=self._setup.noise_multiplier, sample_rate=self._setup.sample_rate
        )

    def check_accounting(self, steps: int) -> None:
        _check_count(self._accountant, steps, steps)

    def close(self) -> None:
        self._engine.detach()


@dataclass(frozen=True, slots=True)
class _Batch:
    """One physical batch for the fast engine: its inputs, and how to turn the model's
    outputs into one loss per privacy unit (a row, or a person's rows summed)."""

    features: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor | None  # people x rows: which positions are real rows
    rows: int

    def unit_losses(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mask is None:  # padding rows (see PaddedGather) get no loss
            logits = logits[: len(self.labels)]
            return functional.cross_entropy(logits.float(), self.labels, reduction="none")
        per_row = functional.cross_entropy(
            logits.float().flatten(0, 1), self.labels.flatten(), reduction="none"
        )
        return per_row.view(self.mask.shape).mul(self.mask).sum(1)


def _row_batches(setup: StepSetup, shard: torch.Tensor) -> Callable[[torch.Tensor], _Batch]:
    gather = PaddedGather(
        setup.train.features[shard].to(setup.device),
        setup.train.labels[shard].to(setup.device),
        row_multiple(setup.strategy.compute_dtype, setup.device),
    )

    def batch(index: torch.Tensor) -> _Batch:
        features, labels = gather(index)
        return _Batch(features, labels, None, len(labels))

    return batch


def _person_batches(setup: StepSetup, people: PersonIndex) -> Callable[[torch.Tensor], _Batch]:
    """People x (their most rows) x features; padding positions point at a zero row."""
    pad = len(setup.train)
    features = torch.cat(
        [setup.train.features, setup.train.features.new_zeros(1, setup.train.width)]
    )
    labels = torch.cat([setup.train.labels, setup.train.labels.new_zeros(1)])
    features, labels = features.to(setup.device), labels.to(setup.device)

    def batch(chosen: torch.Tensor) -> _Batch:
        index, mask = people.padded(chosen.cpu(), pad)
        index, mask = index.to(setup.device), mask.to(setup.device)
        return _Batch(features[index], labels[index], mask, int(mask.sum()))

    return batch


class _OpacusStepper:
    """Opacus' ``make_private`` in hooks or ghost mode, with its Poisson DataLoader.

    Opacus' step hook (its accountant's) runs once per completed logical step, also under
    ``BatchMemoryManager``; wrapping it tells this class where logical steps end.
    """

    def __init__(self, setup: StepSetup, *, ghost: bool) -> None:
        self._setup = setup
        self._ghost = ghost
        self._engine = PrivacyEngine(accountant=setup.accountant)
        private = self._engine.make_private(
            module=setup.model,
            optimizer=setup.optimizer,
            data_loader=_data_loader(setup.train, setup.batch_size),
            noise_multiplier=setup.noise_multiplier,
            max_grad_norm=setup.max_grad_norm,
            poisson_sampling=True,
            noise_generator=entropy_generator(setup.device),
            grad_sample_mode="ghost" if ghost else "hooks",
            **({"criterion": nn.CrossEntropyLoss()} if ghost else {}),
        )
        if ghost:
            self._model, self._optimizer, self._criterion, loader = private
        else:
            self._model, self._optimizer, loader = private
            self._criterion = nn.CrossEntropyLoss()
        actual = (loader.sample_rate, len(loader))
        if actual != (setup.sample_rate, setup.steps_per_epoch):
            raise TrainingError(
                f"Opacus uses sample rate {actual[0]} and {actual[1]} steps per epoch, but "
                f"the plan says {setup.sample_rate} and {setup.steps_per_epoch}"
            )
        self._physical = _physical_batches(loader, self._optimizer, setup.max_physical_batch_size)
        self._loader = self._physical.__enter__()
        self._completed = 0
        accountant_hook = self._optimizer.step_hook
        if accountant_hook is None:
            raise TrainingError("Opacus attached no accountant hook to the DP optimizer")

        def count(optimizer: DPOptimizer) -> None:
            accountant_hook(optimizer)
            self._completed += 1

        self._optimizer.attach_step_hook(count)

    def epoch(self) -> Iterator[list[torch.Tensor]]:
        return iter(self._loader)

    def step(self, batches: Iterator[object]) -> StepOutcome:
        setup, scaler = self._setup, self._setup.scaler
        loss_sum, samples, dropped = 0.0, 0, 0
        before = self._completed
        while self._completed == before:
            batch = next(batches, None)
            if batch is None:
                raise TrainingError("the Poisson sampler ran out of batches within an epoch")
            features, labels = (tensor.to(setup.device) for tensor in batch)  # type: ignore[union-attr]
            with setup.strategy.autocast(setup.device):
                logits = self._model(features)
            loss = self._criterion(logits.float(), labels)
            if self._ghost:
                loss.backward()
            else:
                scaler.scale_loss(loss).backward()
                # Per-sample gradients to fp32 and unscaled *before* Opacus clips them;
                # a record with a non-finite one is zeroed (it then clips to zero).
                dropped += scaler.unscale_grad_samples(self._optimizer.params)
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
            mean_loss = float(loss.detach())
            if len(labels) and math.isfinite(mean_loss):
                loss_sum += mean_loss * len(labels)
            samples += len(labels)
        return StepOutcome(loss_sum, samples, dropped)

    def check_accounting(self, steps: int) -> None:
        _check_count(self._engine.accountant, steps, self._completed)

    def close(self) -> None:
        self._physical.__exit__(None, None, None)


def _records_only(setup: StepSetup) -> None:
    if setup.people is not None:
        raise TrainingInputError(
            "privacy.unit person runs with train.clipping fast only (Opacus samples and clips "
            "records); use clipping fast, or privacy.unit record"
        )


def _no_canaries(setup: StepSetup) -> None:
    if setup.canaries is not None:
        raise TrainingInputError("gradient canaries (the white-box audit) need clipping fast")


def _hooks_stepper(setup: StepSetup) -> PrivateStepper:
    _records_only(setup)
    _no_canaries(setup)
    _single_replica(setup)
    return _OpacusStepper(setup, ghost=False)


def _ghost_stepper(setup: StepSetup) -> PrivateStepper:
    _records_only(setup)
    _no_canaries(setup)
    # Opacus' ghost norms cancel catastrophically on sequence inputs and mis-bound
    # repeated embedding tokens (tests/privacy/test_sensitivity_search.py); for 2-D
    # nn.Linear stacks (the norm is one outer product's) they bound what it adds.
    layers = {type(m) for m in setup.model.modules() if any(True for _ in m.parameters(False))}
    if not isinstance(setup.model, Mlp) or layers - {nn.Linear}:
        raise TrainingInputError(
            "clipping opacus-ghost can bound per-sample norms only for MLPs of nn.Linear "
            "layers on 2-D rows (its ghost norms cancel on sequences and embeddings); use "
            "clipping fast"
        )
    if setup.strategy.compute_dtype != torch.float32:
        raise TrainingInputError(
            "clipping opacus-ghost runs in fp32 only (Opacus computes its per-sample norms in "
            "the autocast dtype); use precision fp32 or clipping fast"
        )
    _records_only(setup)
    _single_replica(setup)
    return _OpacusStepper(setup, ghost=True)


def _single_replica(setup: StepSetup) -> None:
    if setup.replica.distributed:
        raise TrainingInputError(
            "world_size > 1 runs with clipping fast only (Opacus clipping modes are wired for "
            "one process here)"
        )


_STEPPERS: Mapping[ClippingMode, Callable[[StepSetup], PrivateStepper]] = MappingProxyType(
    {
        ClippingMode.FAST: _FastStepper,
        ClippingMode.OPACUS_HOOKS: _hooks_stepper,
        ClippingMode.OPACUS_GHOST: _ghost_stepper,
    }
)


def _check_count(accountant: IAccountant, steps: int, completed: int) -> None:
    counted = sum(entry[2] for entry in accountant.history)
    if counted != steps or completed != steps:
        raise TrainingError(
            f"step count mismatch: trainer took {steps} steps, the accountant counted "
            f"{counted}; refusing to report privacy from either"
        )


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """In-memory rows; ``__getitems__`` gathers a whole batch with one index operation.

    The DataLoader calls ``__getitems__`` with each Poisson batch's indices; the per-row
    ``__getitem__`` path (one Python call and one collate entry per row) is an order of
    magnitude slower on small tabular rows.
    """

    def __init__(self, table: EncodedTable) -> None:
        self._features, self._labels = table.features, table.labels

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._features[index], self._labels[index]

    def __getitems__(self, indices: list[int]) -> _Gathered:
        index = torch.as_tensor(indices, dtype=torch.long)
        return _Gathered(self._features[index], self._labels[index])


@dataclass(frozen=True, slots=True)
class _Gathered:
    """A gathered batch; its length is what Opacus' collate wrapper tests for emptiness."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _collate(batch: _Gathered) -> list[torch.Tensor]:
    return [batch.features, batch.labels]


def _data_loader(train: EncodedTable, batch_size: int) -> DataLoader:
    """Fixed-size batches that ``make_private`` turns into Poisson sampling.

    The sampler draws from a generator seeded from OS entropy: batch membership must stay
    secret for subsampling to amplify privacy.
    """
    return DataLoader(
        _Rows(train), batch_size=batch_size, collate_fn=_collate, generator=entropy_generator()
    )


def _physical_batches(
    loader: DataLoader, optimizer: DPOptimizer, max_physical_batch_size: int | None
) -> contextlib.AbstractContextManager[DataLoader]:
    if max_physical_batch_size is None:
        return contextlib.nullcontext(loader)
    return BatchMemoryManager(
        data_loader=loader, max_physical_batch_size=max_physical_batch_size, optimizer=optimizer
    )
