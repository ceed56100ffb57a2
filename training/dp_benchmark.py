"""DP training throughput, side by side in one process: non-private vs Opacus vs fast clipping.

Every variant trains the same model architecture (fresh weights from the same seed) on
the same in-memory tensors with the same optimizer and the same (expected) batch size:

``nonprivate``
    a plain PyTorch step over shuffled fixed-size batches (one permutation per epoch);
``opacus_hooks`` / ``opacus_ghost``
    Opacus' ``GradSampleModule`` + ``DPOptimizer`` (hooks mode), or its fast-gradient-
    clipping module, optimizer and loss wrapper (ghost mode), fed by the same vectorised
    Poisson sampler as the fast engine: Opacus' best case;
``opacus_ghost_loader``
    ghost clipping once more through ``make_private``'s own Poisson DataLoader over a
    ``TensorDataset``, Opacus' documented data path;
``fast``
    :class:`privacy.clipping.ClippingEngine` with :class:`privacy.sampling.PoissonSampler`.

Non-private and fast training also run under bf16 autocast and, on CUDA, under fp16
autocast with loss scaling (``torch.amp.GradScaler`` for non-private training, the
trainer's fixed-scale :class:`training.precision.LossScaler` for the fast engine). Workloads: an MLP
of any widths (:func:`synthetic_workload`) or a named one (:data:`NAMED_WORKLOADS`).

Variants are timed in interleaved rounds (each round runs every variant for
``seconds_per_round``) so that drift on a shared machine spreads over all of them; the
median over rounds is reported. Data-path time (sampling and gathering, or waiting on the
DataLoader) is timed separately and included in samples/s. Peak memory is measured per
variant in a fresh subprocess (CPU: growth of peak RSS; CUDA: ``max_memory_allocated``),
since one process's allocator reuses what earlier variants freed.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from privacy.clipping import ClippingEngine
from privacy.noise import GaussianNoise
from privacy.products import product_kernel
from privacy.sampling import PoissonSampler, entropy_generator
from training.errors import TrainingInputError
from training.precision import LossScaler, Precision, precision_strategy
from training.private_steps import PaddedGather, noisy_update, row_multiple

__all__ = [
    "NAMED_WORKLOADS",
    "VARIANTS",
    "Workload",
    "default_variants",
    "run_benchmark",
    "synthetic_workload",
    "transformer_workload",
    "workload_for",
]

NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
LEARNING_RATE = 0.05
MOMENTUM = 0.9


@dataclass(frozen=True, slots=True)
class Workload:
    """A model factory and in-memory data: what every variant trains on."""

    name: str
    make_model: Callable[[], nn.Module]
    features: torch.Tensor
    labels: torch.Tensor
    batch_size: int

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_rate(self) -> float:
        return self.batch_size / self.rows


def synthetic_workload(widths: tuple[int, ...], rows: int, batch_size: int) -> Workload:
    """An MLP ``widths[0] -> ... -> widths[-1]`` on ``rows`` Gaussian rows, random labels."""
    if len(widths) < 2 or any(width <= 0 for width in widths):
        raise TrainingInputError(f"model widths must be >= 2 positive integers, got {widths}")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(rows, widths[0], generator=generator)
    labels = torch.randint(0, widths[-1], (rows,), generator=generator)

    def make_model() -> nn.Module:
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-2], widths[1:-1], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-2], widths[-1]))
        return nn.Sequential(*layers)

    name = f"mlp {'-'.join(map(str, widths))}, {rows} rows, batch {batch_size}"
    return Workload(name, make_model, features, labels, batch_size)


class _EncoderBlock(nn.Module):
    """Pre-norm self-attention and MLP. The projections are separate ``nn.Linear`` layers,
    each run once per forward pass (``nn.MultiheadAttention`` keeps its weights outside
    any layer the clipping engine has a rule for)."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(width)
        self.query, self.value = nn.Linear(width, width), nn.Linear(width, width)
        # No key bias: softmax ignores it, so its gradient is zero up to rounding, and a
        # relative error against Opacus on it would measure nothing but that rounding.
        self.key = nn.Linear(width, width, bias=False)
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        normed = self.attention_norm(x)
        q, k, v = (
            proj(normed).view(batch, steps, self.heads, width // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        attended = functional.scaled_dot_product_attention(q, k, v)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, steps, width))
        return x + self.down(functional.gelu(self.up(self.mlp_norm(x))))


class TinyEncoder(nn.Module):
    """Token and position embeddings, encoder blocks, mean pooling, a linear head."""

    def __init__(
        self, vocabulary: int, steps: int, width: int, heads: int, layers: int, classes: int
    ) -> None:
        super().__init__()
        self.token = nn.Embedding(vocabulary, width)
        self.position = nn.Embedding(steps, width)
        self.blocks = nn.Sequential(
            *(_EncoderBlock(width, heads, 4 * width) for _ in range(layers))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Positions per sample, not one shared row: per-sample clipping sees each sample's
        # (contiguous: Opacus' ghost embedding norms view the ids flat).
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids).contiguous()
        hidden = self.blocks(self.token(ids) + self.position(positions))
        return self.head(self.norm(hidden).mean(1))


def transformer_workload(
    rows: int,
    batch_size: int,
    *,
    steps: int = 64,
    vocabulary: int = 1000,
    width: int = 256,
    heads: int = 4,
    layers: int = 2,
) -> Workload:
    """A small transformer encoder classifying ``rows`` random token sequences."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocabulary, (rows, steps), generator=generator)
    labels = torch.randint(0, 2, (rows,), generator=generator)

    def make_model() -> nn.Module:
        return TinyEncoder(vocabulary, steps, width, heads, layers, 2)

    name = (
        f"transformer encoder {layers}x{width} ({heads} heads), {steps} tokens of "
        f"{vocabulary}, {rows} rows, batch {batch_size}"
    )
    return Workload(name, make_model, ids, labels, batch_size)


# Workloads that ``custodian bench dp --model NAME`` builds from (rows, expected batch).
NAMED_WORKLOADS: dict[str, Callable[[int, int], Workload]] = {
    "transformer": transformer_workload,
}


def workload_for(model: str, rows: int, batch_size: int) -> Workload:
    """A named workload, or an MLP from widths like ``64-256-256-2``."""
    if model in NAMED_WORKLOADS:
        return NAMED_WORKLOADS[model](rows, batch_size)
    return synthetic_workload(tuple(int(w) for w in model.split("-")), rows, batch_size)


@dataclass(slots=True)
class _Timing:
    samples: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0


class _Variant:
    """One way to train: ``run(seconds)`` takes steps until the time is up, timing them."""

    def __init__(self, workload: Workload, device: torch.device, dtype: torch.dtype | None):
        self.workload, self.device, self.dtype = workload, device, dtype
        torch.manual_seed(0)
        self.model = workload.make_model().to(device)
        self.features = workload.features.to(device)
        self.labels = workload.labels.to(device)

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None
        )

    def optimizer(self, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=LEARNING_RATE, momentum=MOMENTUM)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        raise NotImplementedError

    def run(self, seconds: float, timing: _Timing) -> None:
        batches = self.batches()
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            fetch = time.perf_counter()
            features, labels = next(batches)
            timing.data_seconds += time.perf_counter() - fetch
            self.step(features, labels)
            timing.samples += len(labels)
        _synchronise(self.device)
        timing.seconds += time.perf_counter() - started


class _NonPrivate(_Variant):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._optimizer = self.optimizer(self.model.parameters())

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            order = torch.randperm(self.workload.rows, device=self.device)
            for index in order.split(self.workload.batch_size):
                if len(index) == self.workload.batch_size:
                    yield self.features.index_select(0, index), self.labels.index_select(0, index)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self.autocast():
            logits = self.model(features)
        functional.cross_entropy(logits.float(), labels).backward()
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)


class _NonPrivateScaled(_NonPrivate):
    """Non-private fp16: ``torch.amp.GradScaler``'s dynamic loss scaling."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._scaler = torch.amp.GradScaler(self.device.type)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self.autocast():
            logits = self.model(features)
        self._scaler.scale(functional.cross_entropy(logits.float(), labels)).backward()
        self._scaler.step(self._optimizer)
        self._scaler.update()
        self._optimizer.zero_grad(set_to_none=True)


class _Poisson(_Variant):
    """In-memory Poisson sampling: one vectorised draw and one gather per step."""

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = PoissonSampler(
            self.workload.rows, self.workload.sample_rate, entropy_generator(self.device)
        )
        while True:
            for index in sampler.epoch():
                yield self.features.index_select(0, index), self.labels.index_select(0, index)


class _Fast(_Poisson):
    """The fast engine as the trainer runs it: one flat gradient vector, noised once."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._optimizer = self.optimizer(self.model.parameters())
        self._engine = ClippingEngine(
            self.model,
            max_grad_norm=MAX_GRAD_NORM,
            noise=GaussianNoise(NOISE_MULTIPLIER * MAX_GRAD_NORM),
        )

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As the trainer gathers: padded to its row multiple (only real rows count)."""
        gather = PaddedGather(
            self.features, self.labels, row_multiple(self.dtype or torch.float32, self.device)
        )
        sampler = PoissonSampler(
            self.workload.rows, self.workload.sample_rate, entropy_generator(self.device)
        )
        while True:
            for index in sampler.epoch():
                yield gather(index)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self._engine.capture(), self.autocast():
            logits = self.model(features)[: len(labels)]
        self._engine.accumulate(functional.cross_entropy(logits.float(), labels, reduction="none"))
        noisy_update(self._engine, self.workload.batch_size, self._optimizer)


class _FastScaled(_Fast):
    """The fast engine under fp16, as the trainer runs it: the run's fixed loss scale is
    divided out before any norm; a record whose gradient overflows contributes zero."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self._scaler = LossScaler(enabled=True)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self._engine.capture(), self.autocast():
            logits = self.model(features)[: len(labels)]
        losses = functional.cross_entropy(logits.float(), labels, reduction="none")
        scaler = self._scaler
        self._engine.accumulate(scaler.scale_loss(losses), loss_scale=scaler.scale)
        noisy_update(self._engine, self.workload.batch_size, self._optimizer)


class _OpacusHooks(_Poisson):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.model = GradSampleModule(self.model)
        self._optimizer = DPOptimizer(
            self.optimizer(self.model.parameters()),
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            expected_batch_size=self.workload.batch_size,
        )

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self.autocast():
            logits = self.model(features)
        functional.cross_entropy(logits.float(), labels).backward()
        for param in self._optimizer.params:  # Opacus clips what it is given: fp32 norms
            param.grad_sample = param.grad_sample.float()
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)


class _GhostStep(_Variant):
    """One step of Opacus' ghost clipping: its loss wrapper's double backward pass."""

    _loss: DPLossFastGradientClipping
    _optimizer: DPOptimizerFastGradientClipping

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        with self.autocast():
            logits = self.model(features)
        self._loss(logits.float(), labels).backward()
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)


class _OpacusGhost(_GhostStep, _Poisson):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.model = GradSampleModuleFastGradientClipping(
            self.model, max_grad_norm=MAX_GRAD_NORM, use_ghost_clipping=True
        )
        self._optimizer = DPOptimizerFastGradientClipping(
            self.optimizer(self.model.parameters()),
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            expected_batch_size=self.workload.batch_size,
        )
        self._loss = DPLossFastGradientClipping(self.model, self._optimizer, nn.CrossEntropyLoss())


class _OpacusGhostLoader(_GhostStep):
    """Ghost clipping fed by ``make_private``'s Poisson DataLoader (per-item dataset path)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        loader = DataLoader(
            TensorDataset(self.workload.features, self.workload.labels),
            batch_size=self.workload.batch_size,
        )
        self.model, self._optimizer, self._loss, self._loader = PrivacyEngine().make_private(
            module=self.model,
            optimizer=self.optimizer(self.model.parameters()),
            data_loader=loader,
            criterion=nn.CrossEntropyLoss(),
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            poisson_sampling=True,
            grad_sample_mode="ghost",
        )

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for features, labels in self._loader:
                yield features.to(self.device), labels.to(self.device)


VARIANTS: dict[str, tuple[type[_Variant], torch.dtype | None]] = {
    "nonprivate_fp32": (_NonPrivate, None),
    "opacus_hooks_fp32": (_OpacusHooks, None),
    "opacus_ghost_fp32": (_OpacusGhost, None),
    "opacus_ghost_loader_fp32": (_OpacusGhostLoader, None),
    "fast_fp32": (_Fast, None),
    "nonprivate_bf16": (_NonPrivate, torch.bfloat16),
    "fast_bf16": (_Fast, torch.bfloat16),
    "nonprivate_fp16": (_NonPrivateScaled, torch.float16),
    "fast_fp16": (_FastScaled, torch.float16),
}
_PRECISIONS = {None: Precision.FP32, torch.bfloat16: Precision.BF16, torch.float16: Precision.FP16}


def default_variants(device: torch.device) -> tuple[str, ...]:
    """Every variant whose precision runs on ``device`` (fp16 on CUDA only)."""
    runnable = []
    for name in VARIANTS:
        try:
            _check_variant(name, device)
        except TrainingInputError:
            continue
        runnable.append(name)
    return tuple(runnable)


def _check_variant(name: str, device: torch.device) -> None:
    try:
        precision_strategy(_PRECISIONS[VARIANTS[name][1]], device)
    except TrainingInputError as err:
        raise TrainingInputError(f"variant {name}: {err}") from None


# Opacus hooks mode is ~50x slower: it gets a smaller share of each round's time budget,
# and is still timed over whole steps.
_SLOW = {"opacus_hooks_fp32": 0.5}


@dataclass(slots=True)
class BenchResult:
    workload: str
    device: str
    threads: int
    rounds: int
    samples_per_second: dict[str, float] = field(default_factory=dict)
    data_fraction: dict[str, float] = field(default_factory=dict)
    peak_memory_mib: dict[str, float] = field(default_factory=dict)
    max_rel_error_vs_opacus: float = float("nan")
    max_rel_error_vs_opacus_bf16: float = float("nan")
    noise_ms_per_step: float = float("nan")

    def ratios(self) -> dict[str, float]:
        sps = self.samples_per_second
        pairs = {
            "fast_fp32/nonprivate_fp32": ("fast_fp32", "nonprivate_fp32"),
            "fast_fp32/opacus_ghost_fp32": ("fast_fp32", "opacus_ghost_fp32"),
            "fast_fp32/opacus_hooks_fp32": ("fast_fp32", "opacus_hooks_fp32"),
            "fast_fp32/opacus_ghost_loader_fp32": ("fast_fp32", "opacus_ghost_loader_fp32"),
            "fast_bf16/nonprivate_bf16": ("fast_bf16", "nonprivate_bf16"),
            "fast_bf16/fast_fp32": ("fast_bf16", "fast_fp32"),
            "fast_fp16/nonprivate_fp16": ("fast_fp16", "nonprivate_fp16"),
        }
        return {k: sps[a] / sps[b] for k, (a, b) in pairs.items() if a in sps and b in sps}

    def to_json(self) -> dict[str, object]:
        return {
            **self.samples_per_second,
            "max_rel_error_vs_opacus": self.max_rel_error_vs_opacus,
            "max_rel_error_vs_opacus_bf16": self.max_rel_error_vs_opacus_bf16,
            "noise_ms_per_step": self.noise_ms_per_step,
            "ratios": self.ratios(),
            "data_fraction": self.data_fraction,
            "peak_memory_mib": self.peak_memory_mib,
            "workload": self.workload,
            "device": self.device,
            "threads": self.threads,
            "rounds": self.rounds,
        }


def run_benchmark(
    workload: Workload,
    *,
    device: torch.device,
    rounds: int = 3,
    seconds_per_round: float = 2.0,
    variants: tuple[str, ...] | None = None,
    memory: Callable[[str], float] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Time ``variants`` (default: all that run on ``device``) in ``rounds`` interleaved
    rounds; errors against Opacus and the noise's cost first."""
    variants = default_variants(device) if variants is None else variants
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise TrainingInputError(f"unknown variants {unknown} (valid: {sorted(VARIANTS)})")
    for name in variants:
        _check_variant(name, device)
    result = BenchResult(workload.name, str(device), torch.get_num_threads(), rounds)
    result.max_rel_error_vs_opacus = clipping_error_vs_opacus(workload, device, None)
    result.max_rel_error_vs_opacus_bf16 = clipping_error_vs_opacus(workload, device, torch.bfloat16)
    result.noise_ms_per_step = noise_ms_per_step(workload, device)
    built = {}
    for name in variants:
        cls, dtype = VARIANTS[name]
        built[name] = cls(workload, device, dtype)
        built[name].run(0.2, _Timing())  # warm-up: allocator, kernels, hooks
    per_round: dict[str, list[_Timing]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            timing = _Timing()
            built[name].run(seconds_per_round * _SLOW.get(name, 1.0), timing)
            per_round[name].append(timing)
            progress(
                f"round {round_ + 1}/{rounds} {name}: {timing.samples / timing.seconds:,.0f}/s"
            )
    for name, timings in per_round.items():
        result.samples_per_second[name] = statistics.median(t.samples / t.seconds for t in timings)
        result.data_fraction[name] = sum(t.data_seconds for t in timings) / sum(
            t.seconds for t in timings
        )
    if memory is not None:
        for name in variants:
            result.peak_memory_mib[name] = memory(name)
            progress(f"peak memory {name}: {result.peak_memory_mib[name]:.1f} MiB")
    return result


def clipping_error_vs_opacus(
    workload: Workload, device: torch.device, dtype: torch.dtype | None
) -> float:
    """Max relative error of the fast engine's clipped sum vs Opacus hooks (no noise).

    One Poisson-sized batch of the workload, both engines under the same autocast; Opacus'
    per-sample gradients go to fp32 before its ``clip_and_accumulate``. Under bf16 Opacus
    forms per-sample gradients in bf16 and the fast engine in (oneDNN) fp32, so the two
    differ by bf16 rounding, not only by summation order.
    """
    torch.manual_seed(0)
    model = workload.make_model().to(device)
    features = workload.features[: workload.batch_size].to(device)
    labels = workload.labels[: workload.batch_size].to(device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    engine = ClippingEngine(model, max_grad_norm=MAX_GRAD_NORM)
    with engine.capture(), autocast:
        logits = model(features)
    engine.accumulate(functional.cross_entropy(logits.float(), labels, reduction="none"))
    ours = engine.take_sums()
    engine.detach()

    wrapped = GradSampleModule(model, loss_reduction="sum")
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        expected_batch_size=len(labels),
        loss_reduction="sum",
    )
    with autocast:
        logits = wrapped(features)
    functional.cross_entropy(logits.float(), labels, reduction="sum").backward()
    for param in optimizer.params:
        param.grad_sample = param.grad_sample.float()
    optimizer.pre_step()
    # Where its products round their inputs to bf16 the engine scales every clip factor by
    # a known margin on purpose (privacy.products); the error is measured without it.
    margin = product_kernel(dtype or torch.float32, device).margin
    errors = [
        float((ours[p] / margin - p.grad).norm() / p.grad.norm().clamp(min=1e-12))
        for p in model.parameters()
    ]
    wrapped._close()
    return max(errors)


def noise_ms_per_step(workload: Workload, device: torch.device, draws: int = 20) -> float:
    """Milliseconds to draw one step's Gaussian noise for the workload's model on ``device``,
    with the sampler the fast engine uses (ChaCha20, float64, drawn on the CPU; the noise
    fills the flat sum buffer)."""
    size = sum(p.numel() for p in workload.make_model().parameters() if p.requires_grad)
    flat = torch.empty(size, dtype=torch.float32, device=device)
    noise = GaussianNoise(NOISE_MULTIPLIER * MAX_GRAD_NORM)
    noise.fill(flat)  # warm-up
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(draws):
        noise.fill(flat)
    _synchronise(device)
    return (time.perf_counter() - started) / draws * 1000


def peak_memory_mib(workload: Workload, name: str, device: torch.device, steps: int) -> float:
    """Peak memory growth of ``steps`` steps of one variant, in this (fresh) process."""
    cls, dtype = VARIANTS[name]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        _reset_peak_rss()
        before = _rss_kib() * 1024
    variant = cls(workload, device, dtype)
    batches = variant.batches()
    for _ in range(steps):
        variant.step(*next(batches))
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _peak_rss_kib() * 1024
    return (peak - before) / 2**20


def memory_in_subprocess(argv: list[str]) -> Callable[[str], float]:
    """Measure each variant's memory in a fresh ``python -m training.dp_benchmark`` process."""

    def measure(name: str) -> float:
        done = subprocess.run(
            [sys.executable, "-m", "training.dp_benchmark", name, *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(done.stdout.strip().splitlines()[-1])

    return measure


def _reset_peak_rss() -> None:
    # Writing 5 resets the kernel's peak-RSS counter (VmHWM) to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")


def _rss_kib() -> int:
    return _status_kib("VmRSS")


def _peak_rss_kib() -> int:
    return _status_kib("VmHWM")


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_main(argv: list[str]) -> None:
    """``python -m training.dp_benchmark VARIANT MODEL ROWS BATCH DEVICE STEPS THREADS``."""
    name, model, rows, batch, device, steps, threads = argv
    torch.set_num_threads(int(threads))
    workload = workload_for(model, int(rows), int(batch))
    print(peak_memory_mib(workload, name, torch.device(device), int(steps)))


if __name__ == "__main__":
    _memory_main(sys.argv[1:])
