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
are computed in fp32 from the captured values. The weighted products give fp32 outputs
into fp32 sums; :mod:`privacy.products` picks how they are formed (on CPU after a
bf16/fp16 forward pass, oneDNN's bf16 mode; on CUDA after a bf16 one, bf16 inputs with
fp32 output), and where their inputs are rounded to bf16 the clip factors are scaled by
:data:`REDUCED_PRECISION_MARGIN` to keep every contribution within C. The *sum* is never
rounded to bf16: that would move it by up to 2^-8 of its magnitude before the noise,
which no per-sample margin bounds.

Assumptions, checked where possible: samples are independent in the forward pass (no
batch norm), every trainable parameter belongs to a module whose hooks see it, and no
module with parameters runs twice in one forward pass (refused: the norm of a sum of two
uses is not the sum of their norms).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from opacus.grad_sample import GradSampleModule
from torch import nn
from torch.nn import functional

from privacy.errors import PrivacyError, PrivacyInputError
from privacy.noise import GaussianNoise
from privacy.products import (
    FP32,
    REDUCED_PRECISION_MARGIN,
    ProductKernel,
    full_fp32_products,
    product_kernel,
)

__all__ = ["REDUCED_PRECISION_MARGIN", "ClippingEngine", "UnsupportedModule"]

# Opacus' guard against division by zero in the clip factor (DPOptimizer.clip_and_accumulate).
_NORM_EPSILON = 1e-6


class UnsupportedModule(PrivacyInputError):
    """The model has a parameter no clipping path can handle."""


@dataclass(frozen=True, slots=True)
class _Site:
    """A module with trainable parameters, resolved once: its rule, its trainable weight
    and bias (None when absent or frozen)."""

    module: nn.Module
    rule: _Rule
    weight: nn.Parameter | None
    bias: nn.Parameter | None


@dataclass(slots=True)
class _Capture:
    site: _Site
    activation: torch.Tensor
    output: torch.Tensor


@dataclass(slots=True)
class _Layer:
    """One captured layer after the backward pass.

    ``output_grad`` is as autograd gave it: in the autocast dtype, multiplied by the loss
    scale; ``unscale`` is 1 / loss scale. Rules that need fp32 unscaled values ask for
    :meth:`grad32` / :meth:`activation32` (converted once, then shared); the linear rule
    reads the raw tensors and folds ``unscale`` into its norms and clip factors, and forms
    its weighted products with ``products``.
    """

    module: nn.Module
    weight: nn.Parameter | None
    bias: nn.Parameter | None
    activation: torch.Tensor
    output_grad: torch.Tensor
    unscale: float
    products: ProductKernel = FP32
    _grad32: torch.Tensor | None = None

    def grad32(self) -> torch.Tensor:
        if self._grad32 is None:
            grad = self.output_grad.float()
            self._grad32 = grad * self.unscale if self.unscale != 1.0 else grad
        return self._grad32

    def activation32(self) -> torch.Tensor:
        activation = self.activation
        return activation.float() if activation.is_floating_point() else activation


# Each fast layer: a captured layer -> per-sample squared norms (fp32, unscaled), and
# (captured layer, clip factors, {parameter: its fp32 sum}) -> add the clipped sums in.
SquaredNorms = Callable[[_Layer], torch.Tensor]
AddClippedSums = Callable[[_Layer, torch.Tensor, Mapping[nn.Parameter, torch.Tensor]], None]


@dataclass(frozen=True, slots=True)
class _Rule:
    squared_norms: SquaredNorms
    add_clipped_sums: AddClippedSums


def _squared_row_norms(rows: torch.Tensor) -> torch.Tensor:
    """fp32 squared Euclidean norms of the rows of a 2-D tensor in any float dtype."""
    if rows.dtype == torch.float32:
        return torch.linalg.vecdot(rows, rows)
    return torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32).square_()


def _linear_squared_norms(layer: _Layer) -> torch.Tensor:
    weighted, biased = layer.weight is not None, layer.bias is not None
    if layer.output_grad.dim() == 2:
        # The per-sample weight gradient is the outer product g_i a_i^T: |g_i| |a_i|.
        g_sq = _squared_row_norms(layer.output_grad)
        if layer.unscale != 1.0:
            g_sq.mul_(layer.unscale**2)
        if not weighted:
            return g_sq
        a_sq = _squared_row_norms(layer.activation)
        return torch.addcmul(g_sq, g_sq, a_sq) if biased else g_sq.mul_(a_sq)
    a = layer.activation32().flatten(1, -2)  # (B, T, in)
    g = layer.grad32().flatten(1, -2)  # (B, T, out)
    steps, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    total = torch.zeros(len(g), dtype=torch.float32, device=g.device)
    if weighted:
        if steps * (d_in + d_out) < d_in * d_out:  # ghost norm: O(T^2 (in + out)) per sample
            total += (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
        else:  # direct: O(T in out) per sample
            total += torch.bmm(g.transpose(1, 2), a).square().sum((1, 2))
    if biased:
        total += g.sum(1).square().sum(1)
    return total.clamp_(min=0)


def _linear_add_clipped_sums(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    """``sum_i c_i g_i a_i^T`` as one matrix product, the clip factors on the narrower side.

    The product's output and the sum are fp32 whatever the kernel's inputs: a bf16 output
    would round the *sum* to bf16. Over a sequence, sample i's gradient is a sum of one
    outer product per position; those may cancel while their rounding errors do not, so
    no per-sample margin bounds a reduced product there: sequences take full fp32.
    """
    g, a = layer.output_grad, layer.activation
    rows = clip if layer.unscale == 1.0 else clip * layer.unscale
    if g.dim() == 2:
        _add_weighted_products(layer, layer.products, g, a, rows, sums)
        return
    rows = rows.repeat_interleave(g[0].numel() // g.shape[-1])  # every position carries c_i
    with full_fp32_products():
        g, a = g.reshape(-1, g.shape[-1]), a.reshape(-1, a.shape[-1])
        _add_weighted_products(layer, FP32, g, a, rows, sums)


def _add_weighted_products(
    layer: _Layer,
    products: ProductKernel,
    g: torch.Tensor,
    a: torch.Tensor,
    rows: torch.Tensor,
    sums: Mapping[nn.Parameter, torch.Tensor],
) -> None:
    weight, bias = layer.weight, layer.bias
    if g.shape[1] <= a.shape[1]:
        g = g * rows[:, None]  # fp32 whatever g's dtype
        if weight is not None:
            products.addmm_(sums[weight], g.t(), a)
        if bias is not None:
            sums[bias].add_(g.sum(0))
    else:
        g = g if g.dtype == torch.float32 else g.float()
        if weight is not None:
            products.addmm_(sums[weight], g.t(), a * rows[:, None])
        if bias is not None:
            sums[bias].addmv_(g.t(), rows)


def _embedding_output_grads(layer: _Layer) -> torch.Tensor:
    module: nn.Embedding = layer.module  # type: ignore[assignment]
    g = layer.grad32().reshape(len(layer.output_grad), -1, module.embedding_dim)
    if module.padding_idx is not None:
        ids = layer.activation.reshape(len(g), -1)
        g = g * (ids != module.padding_idx).unsqueeze(-1)
    return g


def _embedding_squared_norms(layer: _Layer) -> torch.Tensor:
    if layer.weight is None:
        return torch.zeros(len(layer.output_grad), device=layer.output_grad.device)
    g = _embedding_output_grads(layer)
    ids = layer.activation.reshape(len(g), -1)
    # Rows hit by the same token add up before the norm is taken.
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).float()
    return (torch.bmm(g, g.transpose(1, 2)) * same).sum((1, 2)).clamp_(min=0)


def _embedding_add_clipped_sums(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    if layer.weight is None:
        return
    g = _embedding_output_grads(layer) * clip.view(-1, 1, 1)
    sums[layer.weight].index_add_(0, layer.activation.reshape(-1), g.reshape(-1, g.shape[-1]))


def _layer_norm_per_sample(layer: _Layer) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Per-sample gradients of the affine parameters: as small as one activation row."""
    module: nn.LayerNorm = layer.module  # type: ignore[assignment]
    shape = module.normalized_shape
    a, g = layer.activation32(), layer.grad32()
    normalised = functional.layer_norm(a, shape, eps=module.eps)
    leading = tuple(range(1, a.dim() - len(shape)))
    grads = []
    if layer.weight is not None:
        grads.append((layer.weight, (g * normalised).sum(leading) if leading else g * normalised))
    if layer.bias is not None:
        grads.append((layer.bias, g.sum(leading) if leading else g))
    return grads


def _per_sample_squared_norms(
    grads: Iterable[tuple[nn.Parameter, torch.Tensor]], batch: int, device: torch.device
) -> torch.Tensor:
    total = torch.zeros(batch, dtype=torch.float32, device=device)
    for _, grad in grads:
        total += grad.float().reshape(batch, -1).square().sum(1)
    return total


def _add_clipped(
    grads: Iterable[tuple[nn.Parameter, torch.Tensor]],
    clip: torch.Tensor,
    sums: Mapping[nn.Parameter, torch.Tensor],
) -> None:
    for param, grad in grads:
        sums[param].add_(torch.einsum("i,i...->...", clip, grad.float()))


def _per_sample_rule(
    per_sample: Callable[[_Layer], list[tuple[nn.Parameter, torch.Tensor]]],
) -> _Rule:
    """A rule from per-sample gradients of one layer (materialised for that layer only)."""
    return _Rule(
        squared_norms=lambda layer: _per_sample_squared_norms(
            per_sample(layer), len(layer.output_grad), layer.output_grad.device
        ),
        add_clipped_sums=lambda layer, clip, sums: _add_clipped(per_sample(layer), clip, sums),
    )


def _opacus_rule(module_type: type[nn.Module]) -> _Rule:
    """Per-sample gradients from Opacus' grad sampler for this layer type."""
    sampler = GradSampleModule.GRAD_SAMPLERS[module_type]

    def per_sample(layer: _Layer) -> list[tuple[nn.Parameter, torch.Tensor]]:
        # A sample's gradient may sum over positions: full fp32 even within a reduced
        # kernel's mode (see _linear_add_clipped_sums).
        with full_fp32_products():
            grads = sampler(layer.module, [layer.activation32()], layer.grad32())
        return [(p, gs) for p, gs in grads.items() if p.requires_grad]

    return _per_sample_rule(per_sample)


FAST_RULES: Mapping[type[nn.Module], _Rule] = MappingProxyType(
    {
        nn.Linear: _Rule(_linear_squared_norms, _linear_add_clipped_sums),
        nn.Embedding: _Rule(_embedding_squared_norms, _embedding_add_clipped_sums),
        nn.LayerNorm: _per_sample_rule(_layer_norm_per_sample),
    }
)


def _site(module: nn.Module) -> _Site:
    def trainable(name: str) -> nn.Parameter | None:
        param = getattr(module, name, None)
        return param if isinstance(param, nn.Parameter) and param.requires_grad else None

    return _Site(module, _rule_for(module), trainable("weight"), trainable("bias"))


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


class ClippingEngine:
    """Flat per-sample clipping for ``model``, accumulated over physical batches.

    Use::

        engine = ClippingEngine(model, max_grad_norm=C, noise=GaussianNoise(sigma * C, g))
        with engine.capture():
            losses = per_sample_loss(model(x), y)        # shape (B,)
        engine.accumulate(losses)                        # any number of physical batches
        flat = engine.take_flat()                        # noise + clipped sum: divide by
        for param, grad in engine.unflatten(flat):       #   the expected batch size, then
            param.grad = grad                            #   step the optimizer

    ``accumulate`` leaves ``p.grad`` untouched. The clipped sums go into one flat fp32
    buffer (parameters in :attr:`params` order) that starts each step as a fresh draw of
    ``noise`` (zeros without it); :meth:`take_flat` hands it out, and the next
    :meth:`accumulate` starts the next step in it: one allocation for the whole run.
    A loss scale (fp16) is divided out in fp32 before any norm is taken;
    :meth:`accumulate` returns False (and accumulates nothing) when a scaled gradient
    overflowed.
    """

    def __init__(
        self, model: nn.Module, *, max_grad_norm: float, noise: GaussianNoise | None = None
    ) -> None:
        if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
            raise PrivacyInputError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        self.max_grad_norm = float(max_grad_norm)
        self._noise = noise
        self.params = [p for p in model.parameters() if p.requires_grad]
        sites: list[_Site] = []
        covered: set[int] = set()
        for module in model.modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if own:
                sites.append(_site(module))
                covered.update(id(p) for p in own)
        missing = [p for p in self.params if id(p) not in covered]
        if missing:
            raise UnsupportedModule(f"{len(missing)} trainable parameters belong to no module")
        self._captures: list[_Capture] | None = None
        self._flat: torch.Tensor | None = None
        self._sums: dict[nn.Parameter, torch.Tensor] = {}
        self._views: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._started = False  # whether the buffer holds this step's sums
        self._handles = [
            site.module.register_forward_hook(functools.partial(self._hook, site)) for site in sites
        ]

    def _hook(
        self, site: _Site, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        if self._captures is not None:
            self._captures.append(_Capture(site, inputs[0].detach(), output))

    def capture(self) -> _Capturing:
        """Record the activations and outputs of the next forward pass."""
        return _Capturing(self)

    def accumulate(self, per_sample_losses: torch.Tensor, *, loss_scale: float = 1.0) -> bool:
        """Clip each sample's gradient of ``per_sample_losses`` and add it to the sums.

        ``per_sample_losses`` must come from the forward pass captured last, one value per
        sample (multiplied by ``loss_scale`` when fp16 loss scaling is on).
        """
        captures = self._take_captures()
        sums = self._step_sums(per_sample_losses.device)
        batch = per_sample_losses.shape[0]
        if batch == 0:  # an empty Poisson batch: nothing to clip, the noise still comes
            return True
        grads = torch.autograd.grad(
            per_sample_losses.sum(), [c.output for c in captures], allow_unused=True
        )
        unscale = 1.0 / loss_scale
        products = product_kernel(_compute_dtype(captures), per_sample_losses.device)
        layers = [
            (
                c.site.rule,
                _Layer(
                    c.site.module,
                    c.site.weight,
                    c.site.bias,
                    c.activation,
                    torch.zeros_like(c.output) if g is None else g,
                    unscale,
                    products,
                ),
            )
            for c, g in zip(captures, grads, strict=True)
        ]
        squared = layers[0][0].squared_norms(layers[0][1])
        for rule, layer in layers[1:]:
            squared += rule.squared_norms(layer)
        # An overflowed (or NaN) output gradient makes some norm non-finite: fail closed.
        if not torch.isfinite(squared).all():
            return False
        clip = (self.max_grad_norm / squared.sqrt_().add_(_NORM_EPSILON)).clamp_(max=1.0)
        with products.active():
            if products.margin != 1.0:
                clip.mul_(products.margin)
            for rule, layer in layers:
                rule.add_clipped_sums(layer, clip, sums)
        return True

    def take_flat(self) -> torch.Tensor:
        """The noise plus the clipped sums since the last take, flat.

        The engine's own buffer: modify it in place (noise, normalisation) and hand its
        :meth:`unflatten` views to the optimizer, but do not keep it past the next
        :meth:`accumulate`, which overwrites it.
        """
        flat = self._flat
        if flat is None:
            device = self.params[0].device if self.params else torch.device("cpu")
            self._step_sums(device)
            flat = self._flat
        elif not self._started:
            self._start(flat)
        self._started = False
        return flat  # type: ignore[return-value]

    def unflatten(self, flat: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Each parameter with its slice of ``flat``, shaped like it."""
        return self._views if flat is self._flat else self._slices(flat)

    def _slices(self, flat: torch.Tensor) -> list[tuple[nn.Parameter, torch.Tensor]]:
        views, offset = [], 0
        for param in self.params:
            views.append((param, flat[offset : offset + param.numel()].view_as(param)))
            offset += param.numel()
        return views

    def take_sums(self) -> dict[nn.Parameter, torch.Tensor]:
        """A copy of :meth:`take_flat`, per parameter."""
        return dict(self.unflatten(self.take_flat().clone()))

    def discard(self) -> None:
        """Drop what was accumulated (an overflowed fp16 step)."""
        self._started = False
        self._captures = None

    def detach(self) -> None:
        """Remove the forward hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _step_sums(self, device: torch.device) -> Mapping[nn.Parameter, torch.Tensor]:
        """Per-parameter views of the flat buffer, zeroed at the start of a step."""
        if self._flat is None or self._flat.device != device:
            total = sum(p.numel() for p in self.params)
            self._flat = torch.empty(total, dtype=torch.float32, device=device)
            self._views = self._slices(self._flat)
            self._sums = dict(self._views)
            self._start(self._flat)
        elif not self._started:
            self._start(self._flat)
        self._started = True
        return self._sums

    def _start(self, flat: torch.Tensor) -> None:
        # The noise is the accumulator's starting value: no second buffer, no extra pass.
        if self._noise is None:
            flat.zero_()
        else:
            self._noise.fill(flat)

    def _take_captures(self) -> list[_Capture]:
        captures, self._captures = self._captures, None
        if captures is None:
            raise PrivacyError("accumulate() without a captured forward pass")
        if len({id(c.site) for c in captures}) < len(captures):
            module = next(
                c.site.module for c in captures if sum(d.site is c.site for d in captures) > 1
            )
            raise UnsupportedModule(
                f"{type(module).__name__} ran more than once in one forward pass; "
                "per-sample norms of shared parameters are not supported"
            )
        return captures


def _compute_dtype(captures: list[_Capture]) -> torch.dtype:
    """The autocast dtype the captured forward pass ran in (fp32 without autocast)."""
    low = (c.output.dtype for c in captures if c.output.dtype != torch.float32)
    return next(low, torch.float32)


class _Capturing:
    def __init__(self, engine: ClippingEngine) -> None:
        self._engine = engine

    def __enter__(self) -> None:
        self._engine._captures = []

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._engine._captures = None
