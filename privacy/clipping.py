"""Per-sample gradient clipping in one backward pass, without per-sample gradients.

DP-SGD needs, for every sample i, the norm of its gradient g_i over all parameters, and
then the clipped sum ``sum_i min(1, C / (|g_i| + 1e-6)) g_i`` (Opacus' flat clipping,
same constant). For a linear layer ``z = a W^T + b`` the per-sample gradient of W is
``dz_i^T a_i``; it never needs to exist:

- its norm follows from the layer's input ``a`` and output gradient ``dz`` (for 2-D
  inputs ``|dz_i| |a_i|``; for sequences the "ghost norm" ``sum_ts (a_t.a_s)(dz_t.dz_s)``
  or the direct ``|dz_i^T a_i|``, whichever is cheaper for the shapes at hand);
- the clipped sum is one matrix product, ``(c * dz)^T a`` (book-keeping, Bu et al. 2022).

So one ``autograd.grad`` over the layers' *outputs* suffices: autograd then skips every
parameter gradient (they are not asked for) and the first layer's input gradient, and the
weighted products replace the parameter gradients non-private training would compute.
``nn.Embedding`` and ``nn.LayerNorm`` get the same treatment; any other layer with
parameters falls back to Opacus' registered grad sampler for it (per-sample gradients
materialised for that layer only).

Mixed precision: under autocast the forward pass and the backward pass through the
activations run in bf16 or fp16 (where low precision pays off). Norms and clip factors
are computed in fp32 from the captured values. The weighted products take fp32 inputs and
give fp32 outputs; on CPU, after a bf16/fp16 forward pass, oneDNN may round their inputs
to bf16 internally (its bf16 "fpmath" mode, twice as fast here), which moves each
sample's contribution by less than 2^-6, so the clip factors are scaled by
:data:`REDUCED_PRECISION_MARGIN` to keep every contribution within C. The *sum* is never
rounded to bf16: that would move it by up to 2^-8 of its magnitude before the noise,
which no per-sample margin bounds. On CUDA the products run in full fp32.

Assumptions, checked where possible: samples are independent in the forward pass (no
batch norm), every trainable parameter belongs to a module whose hooks see it, and no
module with parameters runs twice in one forward pass (refused: the norm of a sum of two
uses is not the sum of their norms).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from opacus.grad_sample import GradSampleModule
from torch import nn
from torch.nn import functional

from privacy.errors import PrivacyError, PrivacyInputError

__all__ = ["REDUCED_PRECISION_MARGIN", "ClippingEngine", "UnsupportedModule"]

# Opacus' guard against division by zero in the clip factor (DPOptimizer.clip_and_accumulate).
_NORM_EPSILON = 1e-6


class UnsupportedModule(PrivacyInputError):
    """The model has a parameter no clipping path can handle."""


@dataclass(slots=True)
class _Capture:
    module: nn.Module
    activation: torch.Tensor
    output: torch.Tensor


# Each fast layer: (module, activation, output gradient) -> per-sample squared norms (fp32),
# and (module, activation, output gradient, clip factors) -> clipped sums per parameter.
SquaredNorms = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
ClippedSums = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor],
    Iterable[tuple[nn.Parameter, torch.Tensor]],
]


@dataclass(frozen=True, slots=True)
class _Rule:
    squared_norms: SquaredNorms
    clipped_sums: ClippedSums


def _linear_squared_norms(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if g.dim() == 2:
        g_sq = _squared_row_norms(g)
        total = g_sq * _squared_row_norms(a) if layer.weight.requires_grad else 0 * g_sq
        if layer.bias is not None and layer.bias.requires_grad:
            total = total + g_sq
        return total
    a, g = a.flatten(1, -2), g.flatten(1, -2)  # (B, T, in), (B, T, out)
    steps, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    total = torch.zeros(len(g), dtype=torch.float32, device=g.device)
    if layer.weight.requires_grad:
        if steps * (d_in + d_out) < d_in * d_out:  # ghost norm: O(T^2 (in + out)) per sample
            total += (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
        else:  # direct: O(T in out) per sample
            total += torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
    if layer.bias is not None and layer.bias.requires_grad:
        total += g.sum(1).square().sum(1)
    return total.clamp_(min=0)


def _squared_row_norms(rows: torch.Tensor) -> torch.Tensor:
    return (rows * rows).sum(1)


def _linear_clipped_sums(
    layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, clip: torch.Tensor
) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
    weighted = (g * clip.view(-1, *([1] * (g.dim() - 1)))).reshape(-1, g.shape[-1])
    if layer.weight.requires_grad:
        yield layer.weight, weighted.t() @ a.reshape(-1, a.shape[-1])
    if layer.bias is not None and layer.bias.requires_grad:
        yield layer.bias, weighted.sum(0)


def _embedding_output_grads(
    layer: nn.Embedding, ids: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    g = g.float().reshape(len(g), -1, layer.embedding_dim)
    if layer.padding_idx is not None:
        g = g * (ids.reshape(len(g), -1) != layer.padding_idx).unsqueeze(-1)
    return g


def _embedding_squared_norms(
    layer: nn.Embedding, ids: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    if not layer.weight.requires_grad:
        return torch.zeros(len(g), device=g.device)
    g = _embedding_output_grads(layer, ids, g)
    ids = ids.reshape(len(g), -1)
    # Rows hit by the same token add up before the norm is taken.
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).float()
    return (torch.bmm(g, g.transpose(1, 2)) * same).sum((1, 2)).clamp_(min=0)


def _embedding_clipped_sums(
    layer: nn.Embedding, ids: torch.Tensor, g: torch.Tensor, clip: torch.Tensor
) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
    if not layer.weight.requires_grad:
        return
    g = _embedding_output_grads(layer, ids, g) * clip.view(-1, 1, 1)
    summed = torch.zeros_like(layer.weight, dtype=torch.float32)
    summed.index_add_(0, ids.reshape(-1), g.reshape(-1, layer.embedding_dim))
    yield layer.weight, summed


def _layer_norm_per_sample(
    layer: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor
) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Per-sample gradients of the affine parameters: as small as one activation row."""
    shape = layer.normalized_shape
    a, g = a.float(), g.float()
    normalised = functional.layer_norm(a, shape, eps=layer.eps)
    leading = tuple(range(1, a.dim() - len(shape)))
    grads = []
    if layer.weight is not None and layer.weight.requires_grad:
        grads.append((layer.weight, (g * normalised).sum(leading) if leading else g * normalised))
    if layer.bias is not None and layer.bias.requires_grad:
        grads.append((layer.bias, g.sum(leading) if leading else g))
    return grads


def _layer_norm_squared_norms(
    layer: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    return _per_sample_squared_norms(_layer_norm_per_sample(layer, a, g), len(g), g.device)


def _layer_norm_clipped_sums(
    layer: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor, clip: torch.Tensor
) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
    return _clipped(_layer_norm_per_sample(layer, a, g), clip)


def _per_sample_squared_norms(
    grads: Iterable[tuple[nn.Parameter, torch.Tensor]], batch: int, device: torch.device
) -> torch.Tensor:
    total = torch.zeros(batch, dtype=torch.float32, device=device)
    for _, grad in grads:
        total += grad.float().reshape(batch, -1).square().sum(1)
    return total


def _clipped(
    grads: Iterable[tuple[nn.Parameter, torch.Tensor]], clip: torch.Tensor
) -> Iterable[tuple[nn.Parameter, torch.Tensor]]:
    for param, grad in grads:
        yield param, torch.einsum("i,i...->...", clip, grad.float())


def _opacus_rule(module_type: type[nn.Module]) -> _Rule:
    """Per-sample gradients from Opacus' grad sampler for this layer type."""
    sampler = GradSampleModule.GRAD_SAMPLERS[module_type]

    def per_sample(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> list:
        return [(p, gs) for p, gs in sampler(module, [a], g).items() if p.requires_grad]

    return _Rule(
        squared_norms=lambda m, a, g: _per_sample_squared_norms(
            per_sample(m, a, g), len(g), g.device
        ),
        clipped_sums=lambda m, a, g, clip: _clipped(per_sample(m, a, g), clip),
    )


FAST_RULES: Mapping[type[nn.Module], _Rule] = MappingProxyType(
    {
        nn.Linear: _Rule(_linear_squared_norms, _linear_clipped_sums),
        nn.Embedding: _Rule(_embedding_squared_norms, _embedding_clipped_sums),
        nn.LayerNorm: _Rule(_layer_norm_squared_norms, _layer_norm_clipped_sums),
    }
)


def _rule_for(module: nn.Module) -> _Rule:
    kind = type(module)
    if kind in FAST_RULES:
        return FAST_RULES[kind]
    if kind in GradSampleModule.GRAD_SAMPLERS:
        return _opacus_rule(kind)
    raise UnsupportedModule(
        f"{kind.__name__} has trainable parameters but neither a fast clipping rule nor an "
        "Opacus grad sampler"
    )


# A product whose inputs oneDNN rounds to bf16 (fpmath mode bf16) is off by at most
# (1 + 2^-7)^2 - 1 < 2^-6 relative to the exact product of each sample's factors, even if
# it truncated; its accumulation and output stay fp32. Scaling the clip factors by this
# margin keeps each sample's contribution within max_grad_norm.
REDUCED_PRECISION_MARGIN = 1 / (1 + 2**-6)


@contextlib.contextmanager
def _products(low_precision: bool, device: torch.device) -> Iterator[float]:
    """Where the forward ran in bf16/fp16 on CPU, form the weighted products with oneDNN's
    bf16 arithmetic (fp32 in, fp32 accumulation and out); yield the clip-factor margin.

    A plain bf16 matrix product would round the clipped *sum* to bf16 before the noise is
    added, by up to 2^-8 of its magnitude: a change no per-sample margin can bound.
    """
    backend = torch.backends.mkldnn
    if not (low_precision and device.type == "cpu" and backend.is_available()):
        yield 1.0
        return
    previous = backend.matmul.fp32_precision
    backend.matmul.fp32_precision = "bf16"
    try:
        yield REDUCED_PRECISION_MARGIN
    finally:
        backend.matmul.fp32_precision = previous


class ClippingEngine:
    """Flat per-sample clipping for ``model``, accumulated over physical batches.

    Use::

        engine = ClippingEngine(model, max_grad_norm=C)
        with engine.capture():
            losses = per_sample_loss(model(x), y)        # shape (B,)
        engine.accumulate(losses)                        # any number of physical batches
        sums = engine.take_sums()                       # then: p.grad = (sum + N(0, (sigma C)^2))
                                                         #   / expected batch size

    ``accumulate`` leaves ``p.grad`` untouched; the clipped sums live in the engine until
    :meth:`take_sums`. A loss scale (fp16) is divided out of the output gradients in fp32
    before any norm is taken; :meth:`accumulate` returns False (and accumulates nothing)
    when a scaled gradient overflowed.
    """

    def __init__(self, model: nn.Module, *, max_grad_norm: float) -> None:
        if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
            raise PrivacyInputError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        self.max_grad_norm = float(max_grad_norm)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._rules: dict[nn.Module, _Rule] = {}
        covered: set[int] = set()
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                self._rules[module] = _rule_for(module)
                covered.update(id(p) for p in own)
        missing = [p for p in self.params if id(p) not in covered]
        if missing:
            raise UnsupportedModule(f"{len(missing)} trainable parameters belong to no module")
        self._captures: list[_Capture] | None = None
        self._sums: dict[nn.Parameter, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook) for module in self._rules]

    def _hook(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if self._captures is not None:
            self._captures.append(_Capture(module, inputs[0].detach(), output))

    def capture(self) -> _Capturing:
        """Record the activations and outputs of the next forward pass."""
        return _Capturing(self)

    def accumulate(self, per_sample_losses: torch.Tensor, *, loss_scale: float = 1.0) -> bool:
        """Clip each sample's gradient of ``per_sample_losses`` and add it to the sums.

        ``per_sample_losses`` must come from the forward pass captured last, one value per
        sample (multiplied by ``loss_scale`` when fp16 loss scaling is on).
        """
        captures = self._take_captures()
        batch = per_sample_losses.shape[0]
        if batch == 0:  # an empty Poisson batch: nothing to clip, the noise still comes
            return True
        grads = torch.autograd.grad(
            per_sample_losses.sum(), [c.output for c in captures], allow_unused=True
        )
        low_precision = any(c.output.dtype != torch.float32 for c in captures)
        layers = []
        for capture, grad in zip(captures, grads, strict=True):
            grad = torch.zeros_like(capture.output) if grad is None else grad
            # One fp32 copy of each low-precision tensor, shared by norms and products.
            grad = grad.float() / loss_scale if loss_scale != 1.0 else grad.float()
            if loss_scale != 1.0 and not torch.isfinite(grad).all():
                return False
            activation = capture.activation
            if activation.is_floating_point():
                activation = activation.float()
            layers.append((capture.module, activation, grad))
        squared = torch.zeros(batch, dtype=torch.float32, device=per_sample_losses.device)
        for module, activation, grad in layers:
            squared += self._rules[module].squared_norms(module, activation, grad)
        if not torch.isfinite(squared).all():
            return False
        clip = (self.max_grad_norm / (squared.sqrt() + _NORM_EPSILON)).clamp(max=1.0)
        with _products(low_precision, clip.device) as margin:
            clip *= margin
            for module, activation, grad in layers:
                for param, summed in self._rules[module].clipped_sums(
                    module, activation, grad, clip
                ):
                    if param in self._sums:
                        self._sums[param] += summed
                    else:
                        self._sums[param] = summed
        return True

    def take_sums(self) -> dict[nn.Parameter, torch.Tensor]:
        """The clipped sums since the last call (zeros for an empty batch), then reset."""
        sums = {
            p: self._sums[p].view_as(p)
            if p in self._sums
            else torch.zeros_like(p, dtype=torch.float32)
            for p in self.params
        }
        self._sums = {}
        return sums

    def discard(self) -> None:
        """Drop what was accumulated (an overflowed fp16 step)."""
        self._sums = {}
        self._captures = None

    def detach(self) -> None:
        """Remove the forward hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _take_captures(self) -> list[_Capture]:
        captures, self._captures = self._captures, None
        if captures is None:
            raise PrivacyError("accumulate() without a captured forward pass")
        seen: set[int] = set()
        for capture in captures:
            if id(capture.module) in seen:
                raise UnsupportedModule(
                    f"{type(capture.module).__name__} ran more than once in one forward pass; "
                    "per-sample norms of shared parameters are not supported"
                )
            seen.add(id(capture.module))
        return captures


class _Capturing:
    def __init__(self, engine: ClippingEngine) -> None:
        self._engine = engine

    def __enter__(self) -> None:
        self._engine._captures = []

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._engine._captures = None
