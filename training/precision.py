"""Mixed precision that keeps DP-SGD's clipping and noise exact.

Parameters, optimizer state, clipping and noise stay in fp32; only activations (and so the
per-sample gradients Opacus computes from them) are in the low-precision dtype under
``torch.autocast``. Before Opacus clips, :func:`unscale_grad_samples` turns every
parameter's ``grad_sample`` into fp32: a norm computed in bf16 is off by up to ~0.4%, which
would let a clipped gradient exceed ``max_grad_norm``.

fp16 needs loss scaling, and a plain ``torch.amp.GradScaler`` is wrong under DP: Opacus
would clip the *scaled* per-sample gradients, so with a scale S every sample whose true
norm exceeds ``max_grad_norm / S`` is clipped (in practice all of them), the update is
S-independent garbage, and the sensitivity analysis no longer describes what happened.
Here the loss is multiplied by S before ``backward``, and each per-sample gradient is
divided by S in fp32 *before* clipping (:class:`LossScaler`). If any per-sample gradient
overflowed, the step is skipped (gradients dropped, S halved), like ``GradScaler`` does.

A skipped step still counts as a DP-SGD step in the accountant's history: its Poisson
sample was drawn, and whether it overflowed is a function of the sampled records, so the
"no update" outcome is itself released. Counting the step cannot under-count. (It is not a
full answer either: the skip decision, and the loss scale it drives, are not noised.
See the trainer's module notes.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import torch

from training.errors import TrainingError, TrainingInputError

__all__ = [
    "DeviceChoice",
    "LossScaleConfig",
    "LossScaler",
    "Precision",
    "PrecisionStrategy",
    "precision_strategy",
    "resolve_device",
    "unscale_grad_samples",
]


class Precision(StrEnum):
    """Compute precision of activations during training."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class DeviceChoice(StrEnum):
    """Where to train: ``auto`` picks CUDA when available."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True, slots=True)
class PrecisionStrategy:
    """How one precision runs: the autocast dtype, where it runs, and whether it scales losses."""

    precision: Precision
    compute_dtype: torch.dtype
    device_types: frozenset[str]
    loss_scaling: bool

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The context that runs the forward pass in ``compute_dtype`` on ``device``."""
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)


_STRATEGIES: Mapping[Precision, PrecisionStrategy] = MappingProxyType(
    {
        Precision.FP32: PrecisionStrategy(
            Precision.FP32, torch.float32, frozenset({"cpu", "cuda"}), loss_scaling=False
        ),
        # bf16 has fp32's exponent range: gradients do not underflow, no loss scaling.
        Precision.BF16: PrecisionStrategy(
            Precision.BF16, torch.bfloat16, frozenset({"cpu", "cuda"}), loss_scaling=False
        ),
        # fp16 has a narrow exponent range (needs loss scaling) and CPU kernels for it are
        # slow or missing; it is refused there rather than silently emulated.
        Precision.FP16: PrecisionStrategy(
            Precision.FP16, torch.float16, frozenset({"cuda"}), loss_scaling=True
        ),
    }
)


def precision_strategy(precision: Precision | str, device: torch.device) -> PrecisionStrategy:
    """The strategy for ``precision`` on ``device``; TrainingInputError if it cannot run there."""
    try:
        strategy = _STRATEGIES[Precision(precision)]
    except ValueError:
        valid = ", ".join(p.value for p in Precision)
        raise TrainingInputError(f"unknown precision {precision!r} (valid: {valid})") from None
    if device.type not in strategy.device_types:
        supported = ", ".join(sorted(strategy.device_types))
        raise TrainingInputError(
            f"precision {strategy.precision} runs on {supported}, not {device.type}; "
            "use bf16 or fp32 on this device"
        )
    if strategy.precision is Precision.BF16 and device.type == "cuda":
        _require_cuda_bf16()
    return strategy


def _require_cuda_bf16() -> None:
    if not torch.cuda.is_bf16_supported():
        raise TrainingInputError("this CUDA device has no bf16 support; use fp16 or fp32")


def resolve_device(choice: DeviceChoice | str) -> torch.device:
    """The torch device for ``choice``; asking for CUDA without one is refused."""
    try:
        choice = DeviceChoice(choice)
    except ValueError:
        valid = ", ".join(c.value for c in DeviceChoice)
        raise TrainingInputError(f"unknown device {choice!r} (valid: {valid})") from None
    cuda = torch.cuda.is_available()
    if choice is DeviceChoice.CUDA and not cuda:
        raise TrainingInputError("device 'cuda' requested but no CUDA device is available")
    if choice is DeviceChoice.CPU or not cuda:
        return torch.device("cpu")
    return torch.device("cuda")


def unscale_grad_samples(params: Iterable[torch.nn.Parameter], scale: float) -> bool:
    """Replace each ``p.grad_sample`` with ``p.grad_sample / scale`` in fp32; True if all finite.

    Call it after ``backward`` and before the DP optimizer clips. The conversion comes
    first: dividing in fp16 would flush small per-sample gradients to zero.
    """
    finite = []
    for param in params:
        grad_sample = getattr(param, "grad_sample", None)
        if grad_sample is None:
            continue
        if not isinstance(grad_sample, torch.Tensor):
            raise TrainingError(
                "per-sample gradients were accumulated over several backward passes; "
                "step the optimizer after every backward pass"
            )
        unscaled = grad_sample.float()
        if scale != 1.0:
            unscaled = unscaled / scale
        param.grad_sample = unscaled
        # A sum is non-finite iff some element is (or the sum overflows fp32, which only
        # happens when the gradients are as good as infinite), and unlike an elementwise
        # isfinite it allocates nothing the size of the per-sample gradients.
        finite.append(unscaled.sum())
    return bool(torch.isfinite(torch.stack(finite)).all()) if finite else True


@dataclass(frozen=True, slots=True)
class LossScaleConfig:
    """Dynamic loss scaling, as in ``torch.amp.GradScaler``."""

    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    # Below this the scale no longer rescues anything: the gradients themselves overflow.
    min_scale: float = 2.0**-14

    def __post_init__(self) -> None:
        problems = []
        if not self.init_scale > 0:
            problems.append(f"init_scale must be > 0, got {self.init_scale!r}")
        if not self.growth_factor > 1:
            problems.append(f"growth_factor must be > 1, got {self.growth_factor!r}")
        if not 0 < self.backoff_factor < 1:
            problems.append(f"backoff_factor must be in (0, 1), got {self.backoff_factor!r}")
        if not isinstance(self.growth_interval, int) or self.growth_interval < 1:
            problems.append(f"growth_interval must be >= 1, got {self.growth_interval!r}")
        if not 0 < self.min_scale <= self.init_scale:
            problems.append(f"min_scale must be in (0, init_scale], got {self.min_scale!r}")
        if problems:
            raise TrainingInputError("invalid loss scale config: " + "; ".join(problems))


class LossScaler:
    """Scales the loss before ``backward`` and unscales per-sample gradients before clipping.

    Disabled (fp32, bf16), the scale is 1 and a non-finite per-sample gradient is a
    divergence: :meth:`update` raises instead of skipping, so it cannot go unnoticed.
    """

    def __init__(self, *, enabled: bool, config: LossScaleConfig | None = None) -> None:
        self._enabled = enabled
        self._config = config if config is not None else LossScaleConfig()
        self._scale = self._config.init_scale if enabled else 1.0
        self._clean_steps = 0

    @property
    def scale(self) -> float:
        """The current loss scale."""
        return self._scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * scale``, to call ``backward`` on."""
        return loss * self._scale if self._enabled else loss

    def unscale_grad_samples(self, params: Iterable[torch.nn.Parameter]) -> bool:
        """Per-sample gradients to fp32 and divided by the scale; True if all are finite."""
        return unscale_grad_samples(params, self._scale)

    def update(self, *, overflow: bool) -> None:
        """After a step: back off on overflow, grow after ``growth_interval`` clean steps."""
        if not overflow:
            self._clean_steps += 1
            if self._enabled and self._clean_steps >= self._config.growth_interval:
                self._scale *= self._config.growth_factor
                self._clean_steps = 0
            return
        if not self._enabled:
            raise TrainingError(
                "non-finite per-sample gradients: training diverged; lower the learning "
                "rate or max_grad_norm"
            )
        self._scale *= self._config.backoff_factor
        self._clean_steps = 0
        if self._scale < self._config.min_scale:
            raise TrainingError(
                f"fp16 loss scale fell below {self._config.min_scale:g}: gradients overflow "
                "even unscaled; use bf16 or fp32, or lower the learning rate"
            )

    def state_dict(self) -> dict[str, float | int]:
        """JSON-ready state for checkpoints."""
        return {"scale": self._scale, "clean_steps": self._clean_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        scale, clean_steps = state.get("scale"), state.get("clean_steps")
        if (
            set(state) != {"scale", "clean_steps"}
            or not isinstance(scale, float)
            or not scale > 0
            or not isinstance(clean_steps, int)
            or clean_steps < 0
        ):
            raise TrainingInputError(f"invalid loss scaler state: {dict(state)!r}")
        if not self._enabled and scale != 1.0:
            raise TrainingInputError(f"loss scaling is off but the saved scale is {scale}")
        self._scale = scale
        self._clean_steps = clean_steps
