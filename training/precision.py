"""Mixed precision that keeps DP-SGD's clipping and noise exact.

Parameters, optimizer state, clipping and noise stay in fp32; only activations (and so the
per-sample gradients Opacus computes from them) are in the low-precision dtype under
``torch.autocast``. Before Opacus clips, :func:`unscale_grad_samples` turns every
parameter's ``grad_sample`` into fp32: a norm computed in bf16 is off by up to ~0.4%, which
would let a clipped gradient exceed ``max_grad_norm``.

fp16 needs loss scaling, and a plain ``torch.amp.GradScaler`` is wrong under DP twice over:
Opacus would clip the *scaled* per-sample gradients (with a scale S every sample whose
true norm exceeds ``max_grad_norm / S`` is clipped, in practice all of them), and its
dynamic scale and overflow-skip decisions are functions of the sampled records, released
without noise (one crafted record can force every step that samples it to be skipped).
Here (:class:`LossScaler`) the scale is a power of two fixed for the run; the loss is
multiplied by it before ``backward`` and each per-sample gradient is divided by it
(exactly) before clipping. A record whose per-sample gradient is not finite, in any
precision, contributes zero: its own clipped contribution, within the bound. No step is
skipped or aborted because of what one record holds; such records are counted for the
operator (a diagnostic, not released).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import torch

from training.errors import TrainingError, TrainingInputError

__all__ = [
    "DeviceChoice",
    "DEFAULT_LOSS_SCALE",
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


def unscale_grad_samples(params: Iterable[torch.nn.Parameter], scale: float) -> int:
    """Replace each ``p.grad_sample`` with ``p.grad_sample / scale`` in fp32, with the rows
    of records whose per-sample gradient is not finite (in any parameter) set to zero;
    returns how many records were zeroed.

    Call it after ``backward`` and before the DP optimizer clips (a zero gradient is
    clipped to zero). The conversion comes first: dividing in fp16 would flush small
    per-sample gradients to zero.
    """
    unscaled, finite = [], None
    for param in params:
        grad_sample = getattr(param, "grad_sample", None)
        if grad_sample is None:
            continue
        if not isinstance(grad_sample, torch.Tensor):
            raise TrainingError(
                "per-sample gradients were accumulated over several backward passes; "
                "step the optimizer after every backward pass"
            )
        values = grad_sample.float()
        if scale != 1.0:
            values = values / scale
        rows = torch.isfinite(values).reshape(len(values), -1).all(1)
        finite = rows if finite is None else finite & rows
        unscaled.append((param, values))
    if finite is None:
        return 0
    bad = ~finite
    for param, values in unscaled:
        param.grad_sample = values.masked_fill(bad.view(-1, *([1] * (values.dim() - 1))), 0.0)
    return int(bad.sum())


# fp16's largest finite value is 65504 and a per-sample loss gradient is at most 1 in
# each logit: 2^10 leaves room for 64x growth through the layers before overflow, and
# lifts gradients down to ~6e-11 above fp16's smallest subnormal.
DEFAULT_LOSS_SCALE = 2.0**10


class LossScaler:
    """A loss scale fixed for the run: scales the loss before ``backward`` and unscales
    per-sample gradients before clipping. Disabled (fp32, bf16), the scale is 1.

    The scale is never updated from what training sees: an update or a skip decision would
    depend on the sampled records and be released without noise.
    """

    def __init__(self, *, enabled: bool, scale: float = DEFAULT_LOSS_SCALE) -> None:
        if not (isinstance(scale, float) and scale > 0 and math.frexp(scale)[0] == 0.5):
            raise TrainingInputError(f"the loss scale must be a power of two, got {scale!r}")
        self._enabled = enabled
        self._scale = scale if enabled else 1.0

    @property
    def scale(self) -> float:
        """The run's loss scale."""
        return self._scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * scale``, to call ``backward`` on."""
        return loss * self._scale if self._enabled else loss

    def unscale_grad_samples(self, params: Iterable[torch.nn.Parameter]) -> int:
        """Per-sample gradients to fp32 and divided by the scale; non-finite records zeroed
        (their count returned)."""
        return unscale_grad_samples(params, self._scale)

    def state_dict(self) -> dict[str, float]:
        """JSON-ready state for checkpoints."""
        return {"scale": self._scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check that a checkpoint was written with this run's scale (it never changes)."""
        if set(state) != {"scale"} or state.get("scale") != self._scale:
            raise TrainingInputError(
                f"loss scaler state {dict(state)!r} does not match this run's fixed scale "
                f"{self._scale}"
            )
