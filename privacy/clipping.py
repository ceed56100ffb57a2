"""Per-sample gradient clipping in one backward pass, with a sensitivity bound that holds
for every input, as computed.

DP-SGD needs, for every record i, the clipped contribution ``c_i g_i`` with
``|c_i g_i| <= C``, ``c_i = min(1, C / (|g_i| + 1e-6))`` (Opacus' flat clipping, same
constant). What matters for privacy is the norm of what is *actually added* to the sum,
in floating point, not the norm of the exact gradient: every rule below computes, per
record, an upper bound ``N_i`` on the norm of its contribution as the engine will add it
(before the clip factor), and ``c_i = margin * min(1, C / (N_i + 1e-6))``.

How each layer bounds what it adds (norms always in float64):

- ``nn.Linear`` on 2-D input: the per-record gradient is one outer product ``g_i a_i^T``,
  norm ``|g_i| |a_i|``, no cancellation possible; the clipped sum is one matrix product
  ``(c * g)^T a`` (book-keeping, Bu et al. 2022). Rounding of each record's single product
  term is relative, covered by the margin.
- ``nn.Linear`` on sequences (3-D input), two paths, the cheaper for the shapes:

  *direct*: the per-record gradient ``G_i = sum_t g_t a_t^T`` is materialised (one batched
  product), its norm taken from the materialised tensor, and ``sum_i c_i G_i`` added from
  that same tensor: the bound is exact whatever ``G_i``'s rounding.

  *ghost*: ``|G_i|^2 = sum_{s,t} (g_s.g_t)(a_s.a_t)`` in float64, plus the float64
  error bound, plus an additive bound on the rounding of the product that adds the record
  (``sum_t`` of terms that may cancel: relative bounds do not hold), ``kappa * sum_t
  |g_t| |a_t|`` with kappa from the product precision and the number of terms. A record
  whose time steps cancel gets a norm dominated by that bound: it is clipped harder, never
  under-clipped. (Opacus' ghost clipping uses the same formula in the autocast dtype
  without either bound; with inputs ~1e3 and larger the computed norm collapses towards 0
  while the contribution does not: ``train.clipping: opacus-ghost`` is therefore refused
  for every model but 2-D ``nn.Linear`` stacks.)

  The bias gradient ``sum_t g_t`` is materialised per record in both paths.
- ``nn.Embedding``: per (record, token) rows, the sum of the output gradients at that
  record's positions holding the token, materialised; norms from those rows and the rows
  added as they are (a repeated token's gradients are summed once, before the norm).
- ``nn.LayerNorm`` and every layer that falls back to Opacus' grad sampler: per-sample
  gradients of that layer materialised, normed and added as they are.

Products: :mod:`privacy.products` picks the kernel for the 2-D linear products from the
device and autocast dtype (after bf16/fp16 on CPU oneDNN's bf16 mode, inputs rounded to
bf16 where the CPU has AMX; after bf16 on CUDA bf16 inputs with fp32 output), which moves
a record's single outer product by a relative 2^-6 at most: the margin covers it. Every
product that sums over a record's positions, or adds materialised per-record gradients,
runs in full fp32. :class:`ProductPrecision` ``EMULATED_BF16`` rounds *every* product
input to bf16 explicitly (tests on CPUs without AMX): the bounds hold even then, the
ghost path's additive bound covering the sums. The *sum* is never rounded to bf16.

A record whose bound is not finite (an overflowed or NaN gradient, any precision)
contributes exactly zero: its rows are zeroed before any product, nothing is skipped or
aborted, and :attr:`ClippingEngine.nonfinite_records` counts it (a diagnostic for the
operator, not a release).

Assumptions, checked where possible: samples are independent in the forward pass (no
batch norm), every trainable parameter belongs to a module whose hooks see it, and no
module with parameters runs twice in one forward pass (refused: the norm of a sum of two
uses is not the sum of their norms). The bounds are for each record's contribution as
the engine forms it; the fp32 accumulation of many records' contributions into one sum
rounds like any floating-point sum (the noise added to it is far larger).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

import torch
from opacus.grad_sample import GradSampleModule
from torch import nn
from torch.nn import functional

from privacy.errors import PrivacyError, PrivacyInputError
from privacy.noise import GaussianNoise
from privacy.products import FP32, ProductKernel, full_fp32_products, product_kernel

__all__ = [
    "FP32_MARGIN",
    "REDUCED_PRECISION_MARGIN",
    "ClippingEngine",
    "ProductPrecision",
    "SequenceNorms",
    "UnsupportedModule",
]

# Opacus' guard against division by zero in the clip factor (DPOptimizer.clip_and_accumulate).
_NORM_EPSILON = 1e-6
_FP32_UNIT = 2.0**-24  # unit roundoff of fp32 (round to nearest)
_FP64_UNIT = 2.0**-53
# A product whose inputs are rounded to bf16 (even by truncation) is off by at most
# (1 + 2^-7)^2 - 1 < 2^-6 relative to the exact product of its fp32 inputs.
_BF16_PRODUCT_ERROR = 2.0**-6

_SMALLEST_CLIP = 2.0**-100
_LARGEST_LOSS_SCALE = 2.0**24
# The clip factor is rounded to fp32, multiplies the record's rows, and the product
# rounds: a few fp32 units, covered 16 times over.
FP32_MARGIN = 1 / (1 + 2**-20)
# Scaling clip factors by this keeps each single-term contribution within C when the
# products' inputs are rounded to bf16.
REDUCED_PRECISION_MARGIN = FP32_MARGIN / (1 + _BF16_PRODUCT_ERROR)


class UnsupportedModule(PrivacyInputError):
    """The model has a parameter no clipping path can handle."""


class ProductPrecision(StrEnum):
    """How the weighted products round, when a caller fixes it (tests): ``FP32``, or
    ``EMULATED_BF16``, every product input rounded to bf16 explicitly (what AMX CPUs do in
    oneDNN's bf16 mode, and the CUDA bf16 kernel, on any CPU). Without it the engine takes
    :func:`privacy.products.product_kernel`'s kernel for the device and autocast dtype."""

    FP32 = "fp32"
    EMULATED_BF16 = "emulated-bf16"


class SequenceNorms(StrEnum):
    """Which path computes a sequence ``nn.Linear``'s per-record norms."""

    CHEAPER = "cheaper"  # direct or ghost, by the per-record cost for the shapes at hand
    DIRECT = "direct"
    GHOST = "ghost"


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
    scale; ``unscale`` is 1 / loss scale (a power of two: dividing by it is exact). Rules
    that need fp32 unscaled values ask for :meth:`grad32` / :meth:`activation32`.
    ``products`` rounds the inputs of the weighted products as the products will.
    ``cache`` keeps what a rule materialised for the norms, to add exactly that.
    """

    module: nn.Module
    weight: nn.Parameter | None
    bias: nn.Parameter | None
    activation: torch.Tensor
    output_grad: torch.Tensor
    unscale: float
    products: _Products
    sequence_norms: SequenceNorms
    cache: dict[str, object] = field(default_factory=dict)

    def grad32(self) -> torch.Tensor:
        cached = self.cache.get("grad32")
        if cached is None:
            grad = self.output_grad.float()
            cached = grad * self.unscale if self.unscale != 1.0 else grad
            self.cache["grad32"] = cached
        return cached  # type: ignore[return-value]

    def activation32(self) -> torch.Tensor:
        activation = self.activation
        return activation.float() if activation.is_floating_point() else activation

    def drop(self, records: torch.Tensor) -> None:
        """Zero the captured values of ``records`` (a boolean mask) and forget the cache."""

        def rows(tensor: torch.Tensor) -> torch.Tensor:
            return records.view(-1, *([1] * (tensor.dim() - 1)))

        self.output_grad = self.output_grad.masked_fill(rows(self.output_grad), 0)
        if self.activation.is_floating_point():
            self.activation = self.activation.masked_fill(rows(self.activation), 0)
        self.cache.clear()


@dataclass(frozen=True, slots=True)
class _Norms:
    """Per record (float64): the squared norm of the layer's contribution as materialised
    or computed, and an additive bound on how far the product that adds it may move it."""

    squared: torch.Tensor
    slack: torch.Tensor | None = None


# Each fast layer: a captured layer -> per-record norms (float64, unscaled), and
# (captured layer, clip factors, {parameter: its fp32 sum}) -> add the clipped sums in.
Norms = Callable[[_Layer], _Norms]
AddClippedSums = Callable[[_Layer, torch.Tensor, Mapping[nn.Parameter, torch.Tensor]], None]


@dataclass(frozen=True, slots=True)
class _Rule:
    norms: Norms
    add_clipped_sums: AddClippedSums


def _squared_norms64(tensor: torch.Tensor) -> torch.Tensor:
    """float64 squared Euclidean norms over all but the first dimension."""
    flat = tensor.reshape(len(tensor), -1)
    return torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64).square_()


def _squared_row_norm_bounds(rows: torch.Tensor) -> torch.Tensor:
    """float64 upper bounds on the squared norms of a 2-D tensor's rows, from fp32 sums.

    An fp32 sum of n squares is within gamma_(n+3) of exact (relative: the terms are
    non-negative; the fp32 root and its square in float64 are two more roundings, and
    one is spare), plus at most 2^-149 per term lost to underflow. A row
    whose fp32 sum overflows (entries above ~1e19) gets an infinite bound: the record then
    contributes zero, like a non-finite one. (A float64 cast of the whole tensor costs a
    fifth of a small MLP's step; ``vector_norm`` is torch's cheapest fp32 sum of squares,
    a third of ``vecdot``'s time on 64 columns.)
    """
    width = rows.shape[1]
    root = torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32).double()
    floor = root.new_tensor(width * 2.0**-149)
    return torch.addcmul(floor, root, root, value=1 + _gamma(width + 3, _FP32_UNIT))


def _linear_norms(layer: _Layer) -> _Norms:
    if layer.output_grad.dim() == 2:
        # The per-record weight gradient is the outer product g_i a_i^T: |g_i| |a_i|.
        g_sq = _squared_row_norm_bounds(layer.output_grad)
        if layer.unscale != 1.0:
            g_sq.mul_(layer.unscale**2)
        if layer.weight is None:
            return _Norms(g_sq)
        a_sq = _squared_row_norm_bounds(layer.activation)
        if layer.bias is not None:  # the bias gradient is g_i itself
            a_sq.add_(1.0)
        return _Norms(g_sq.mul_(a_sq))
    total = torch.zeros(
        len(layer.output_grad), dtype=torch.float64, device=layer.output_grad.device
    )
    slack = None
    if layer.weight is not None:
        if _sequence_path(layer) is SequenceNorms.DIRECT:
            total += _squared_norms64(_sequence_weight_grads(layer))
        else:
            squared, slack = _ghost_norms(layer)
            total += squared
    if layer.bias is not None:
        total += _squared_norms64(_sequence_bias_grads(layer))
    return _Norms(total, slack)


def _sequence_path(layer: _Layer) -> SequenceNorms:
    if layer.sequence_norms is not SequenceNorms.CHEAPER:
        return layer.sequence_norms
    steps = layer.output_grad[0].numel() // layer.output_grad.shape[-1]
    d_in, d_out = layer.activation.shape[-1], layer.output_grad.shape[-1]
    # ghost: O(T^2 (in + out)) per record; direct: O(T in out) and in * out memory.
    return SequenceNorms.GHOST if steps * (d_in + d_out) < d_in * d_out else SequenceNorms.DIRECT


def _sequence_factors(layer: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, in) activations and (B, T, out) output gradients, fp32, as the products get them."""
    cached = layer.cache.get("factors")
    if cached is None:
        batch = len(layer.output_grad)
        a = layer.products.operand(
            layer.activation32().reshape(batch, -1, layer.activation.shape[-1])
        )
        g = layer.products.operand(layer.grad32().reshape(batch, -1, layer.output_grad.shape[-1]))
        cached = layer.cache["factors"] = (a, g)
    return cached  # type: ignore[return-value]


def _sequence_weight_grads(layer: _Layer) -> torch.Tensor:
    """Per-record weight gradients ``sum_t g_t a_t^T`` (B, out, in), materialised."""
    cached = layer.cache.get("weight_grads")
    if cached is None:
        a, g = _sequence_factors(layer)
        with full_fp32_products():
            cached = layer.cache["weight_grads"] = torch.bmm(g.transpose(1, 2), a)
    return cached  # type: ignore[return-value]


def _sequence_bias_grads(layer: _Layer) -> torch.Tensor:
    cached = layer.cache.get("bias_grads")
    if cached is None:
        g = layer.grad32()
        cached = layer.cache["bias_grads"] = g.reshape(len(g), -1, g.shape[-1]).sum(1)
    return cached  # type: ignore[return-value]


def _ghost_norms(layer: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared norms by the ghost formula in float64, with the float64 error folded in,
    and the additive bound on the rounding of the product that will add each record."""
    a32, g32 = _sequence_factors(layer)
    a, g = a32.double(), g32.double()
    steps, d_in, d_out = a.shape[1], a.shape[2], g.shape[2]
    squared = (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
    # sum_t |g_t| |a_t|: bounds every |term| sum the formula and the product can cancel.
    spread = (torch.linalg.vector_norm(g, dim=2) * torch.linalg.vector_norm(a, dim=2)).sum(1)
    # Each dot product, their products and the T^2-term sum round in float64.
    float64_error = _gamma(d_in + d_out + steps * steps + 2, _FP64_UNIT) * spread.square()
    squared = squared.clamp_(min=0).add_(float64_error)
    # The product that adds record i sums T terms c g_t a_t^T, each within term_error of
    # exact, then rounds T times in fp32 accumulation, after c * g rounded once more.
    term = layer.products.sequence_term_error + _FP32_UNIT
    kappa = term + _gamma(steps + 1, _FP32_UNIT) * (1 + term)
    if layer.unscale != 1.0:
        squared.mul_(layer.unscale**2)
        spread.mul_(layer.unscale)
    return squared, spread.mul_(kappa)


def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n: the relative error bound of an n-term floating-point sum."""
    return n * unit / (1 - n * unit)


def _linear_add_clipped_sums(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    if layer.output_grad.dim() > 2:
        _sequence_add_clipped_sums(layer, clip, sums)
        return
    # ``sum_i c_i g_i a_i^T`` as one matrix product, the clip factors on the narrower side.
    # Both operands go to the product in fp32: a bf16 product would round the *sum*.
    g, a = layer.output_grad, layer.activation
    rows = clip if layer.unscale == 1.0 else clip * layer.unscale  # exact: see accumulate
    weight, bias = layer.weight, layer.bias
    products = layer.products
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
            sums[bias].addmv_(products.operand(g).t(), products.operand(rows))


def _sequence_add_clipped_sums(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    # A record's positions may cancel while bf16 rounding errors would not: full fp32.
    with full_fp32_products():
        _sequence_add_in_fp32(layer, clip, sums)


def _sequence_add_in_fp32(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    products = layer.products
    if layer.weight is not None:
        if _sequence_path(layer) is SequenceNorms.DIRECT:
            grads = _sequence_weight_grads(layer)
            sums[layer.weight].view(-1).addmv_(
                products.operand(grads.reshape(len(grads), -1)).t(), products.operand(clip)
            )
        else:
            a, g = _sequence_factors(layer)
            # The engine rounds each record's rows as the bound assumed: c * g, then the
            # product's own rounding of its inputs.
            weighted = products.operand(g * clip.view(-1, 1, 1))
            sums[layer.weight].addmm_(
                weighted.reshape(-1, weighted.shape[-1]).t(), a.reshape(-1, a.shape[-1])
            )
    if layer.bias is not None:
        grads = _sequence_bias_grads(layer)
        sums[layer.bias].addmv_(products.operand(grads).t(), products.operand(clip))


def _embedding_rows(layer: _Layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per (record, token) gradient rows: (record index, token id, row), materialised."""
    cached = layer.cache.get("rows")
    if cached is None:
        module: nn.Embedding = layer.module  # type: ignore[assignment]
        batch, width = len(layer.output_grad), module.embedding_dim
        g = layer.grad32().reshape(batch, -1, width)
        ids = layer.activation.reshape(batch, -1)
        if module.padding_idx is not None:
            g = g * (ids != module.padding_idx).unsqueeze(-1)
        records = torch.arange(batch, device=ids.device).unsqueeze(1)
        keys = (records * module.num_embeddings + ids).reshape(-1)
        unique, inverse = torch.unique(keys, return_inverse=True)
        rows = g.new_zeros(len(unique), width).index_add_(0, inverse, g.reshape(-1, width))
        cached = layer.cache["rows"] = (
            unique // module.num_embeddings,
            unique % module.num_embeddings,
            rows,
        )
    return cached  # type: ignore[return-value]


def _embedding_norms(layer: _Layer) -> _Norms:
    batch = len(layer.output_grad)
    squared = torch.zeros(batch, dtype=torch.float64, device=layer.output_grad.device)
    if layer.weight is None:
        return _Norms(squared)
    records, _, rows = _embedding_rows(layer)
    return _Norms(squared.index_add_(0, records, _squared_norms64(rows)))


def _embedding_add_clipped_sums(
    layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]
) -> None:
    if layer.weight is None:
        return
    records, tokens, rows = _embedding_rows(layer)
    sums[layer.weight].index_add_(0, tokens, rows * clip[records].unsqueeze(1))


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


def _per_sample_rule(
    per_sample: Callable[[_Layer], list[tuple[nn.Parameter, torch.Tensor]]],
) -> _Rule:
    """A rule from per-sample gradients of one layer (materialised for that layer only)."""

    def grads(layer: _Layer) -> list[tuple[nn.Parameter, torch.Tensor]]:
        cached = layer.cache.get("per_sample")
        if cached is None:
            with full_fp32_products():  # a record's gradient may sum over positions
                cached = [(p, g.float()) for p, g in per_sample(layer)]
            layer.cache["per_sample"] = cached
        return cached  # type: ignore[return-value]

    def norms(layer: _Layer) -> _Norms:
        total = torch.zeros(
            len(layer.output_grad), dtype=torch.float64, device=layer.output_grad.device
        )
        for _, grad in grads(layer):
            total += _squared_norms64(grad)
        return _Norms(total)

    def add(layer: _Layer, clip: torch.Tensor, sums: Mapping[nn.Parameter, torch.Tensor]) -> None:
        operand = layer.products.operand
        with full_fp32_products():
            for param, grad in grads(layer):
                flat = operand(grad.reshape(len(grad), -1))
                sums[param].view(-1).addmv_(flat.t(), operand(clip))

    return _Rule(norms, add)


def _opacus_rule(module_type: type[nn.Module]) -> _Rule:
    """Per-sample gradients from Opacus' grad sampler for this layer type."""
    sampler = GradSampleModule.GRAD_SAMPLERS[module_type]

    def per_sample(layer: _Layer) -> list[tuple[nn.Parameter, torch.Tensor]]:
        grads = sampler(layer.module, [layer.activation32()], layer.grad32())
        return [(p, gs) for p, gs in grads.items() if p.requires_grad]

    return _per_sample_rule(per_sample)


FAST_RULES: Mapping[type[nn.Module], _Rule] = MappingProxyType(
    {
        nn.Linear: _Rule(_linear_norms, _linear_add_clipped_sums),
        nn.Embedding: _Rule(_embedding_norms, _embedding_add_clipped_sums),
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


@dataclass(frozen=True, slots=True)
class _Products:
    """The products of one ``accumulate``: the 2-D linear products go through ``kernel``
    (which may round their inputs to bf16: ``margin`` covers a single outer product);
    every product that sums over a record's positions, or adds materialised per-record
    gradients, runs in full fp32 (:func:`privacy.products.full_fp32_products`), unless
    ``emulate`` rounds all inputs to bf16 (tests: the bounds must hold even then)."""

    kernel: ProductKernel
    emulate: bool = False

    @property
    def margin(self) -> float:
        reduced = self.emulate or self.kernel.margin != 1.0
        return REDUCED_PRECISION_MARGIN if reduced else FP32_MARGIN

    @property
    def sequence_term_error(self) -> float:
        """Relative error bound of one product term in the full-fp32 products."""
        return _BF16_PRODUCT_ERROR if self.emulate else 2 * _FP32_UNIT

    def operand(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` as the product will see it: rounded to bf16 under emulation."""
        return tensor.bfloat16().float() if self.emulate else tensor

    def addmm_(self, out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
        """``out += mat1 @ mat2`` by the kernel (2-D linear layers only)."""
        if self.emulate:
            out.addmm_(self.operand(mat1.float()), self.operand(mat2.float()))
        else:
            self.kernel.addmm_(out, mat1, mat2)


class ClippingEngine:
    """Flat per-sample clipping for ``model``, accumulated over physical batches.

    Use::

        engine = ClippingEngine(model, max_grad_norm=C, noise=GaussianNoise(sigma * C))
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
    A loss scale (fp16, a power of two) is divided out before any norm is taken.

    ``products`` fixes how the weighted products round (None: oneDNN bf16 on CPU after a
    low-precision forward pass, fp32 otherwise); ``sequence_norms`` picks the sequence
    ``nn.Linear`` path.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_grad_norm: float,
        noise: GaussianNoise | None = None,
        products: ProductPrecision | None = None,
        sequence_norms: SequenceNorms = SequenceNorms.CHEAPER,
    ) -> None:
        if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
            raise PrivacyInputError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        self.max_grad_norm = float(max_grad_norm)
        self._noise = noise
        self._products = None if products is None else ProductPrecision(products)
        self._sequence_norms = SequenceNorms(sequence_norms)
        self.nonfinite_records = 0  # diagnostic: records that contributed zero, whole run
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

    def accumulate(self, per_sample_losses: torch.Tensor, *, loss_scale: float = 1.0) -> int:
        """Clip each record's gradient of ``per_sample_losses`` and add it to the sums.

        ``per_sample_losses`` must come from the forward pass captured last, one value per
        record (multiplied by ``loss_scale``, a power of two, when fp16 loss scaling is on).
        Returns how many records contributed zero because their gradient was not finite.
        """
        if not (1 <= loss_scale <= _LARGEST_LOSS_SCALE and math.frexp(loss_scale)[0] == 0.5):
            raise PrivacyInputError(
                f"loss_scale must be a power of two in [1, 2^24], got {loss_scale!r}"
            )
        captures = self._take_captures()
        sums = self._step_sums(per_sample_losses.device)
        batch = per_sample_losses.shape[0]
        if batch == 0:  # an empty Poisson batch: nothing to clip, the noise still comes
            return 0
        grads = torch.autograd.grad(
            per_sample_losses.sum(), [c.output for c in captures], allow_unused=True
        )
        if self._products is None:
            products = _Products(product_kernel(_compute_dtype(captures), per_sample_losses.device))
        else:
            products = _Products(FP32, self._products is ProductPrecision.EMULATED_BF16)
        layers = [
            (
                c.site.rule,
                _Layer(
                    c.site.module,
                    c.site.weight,
                    c.site.bias,
                    c.activation,
                    torch.zeros_like(c.output) if g is None else g,
                    1.0 / loss_scale,
                    products,
                    self._sequence_norms,
                ),
            )
            for c, g in zip(captures, grads, strict=True)
        ]
        with products.kernel.active():
            # Rows as the layers saw them: padding rows (zero output gradient) included.
            rows = len(layers[0][1].output_grad) if layers else batch
            bound = self._bounds(layers, rows, per_sample_losses.device)
            # An overflowed or NaN gradient: that record contributes exactly zero (its
            # rows are zeroed, and an infinite bound gives it a zero clip factor).
            finite = torch.isfinite(bound)
            dropped = len(bound) - int(finite.sum())
            if dropped:
                bad = finite.logical_not_()
                self.nonfinite_records += dropped
                bound.masked_fill_(bad, math.inf)
                for _, layer in layers:
                    layer.drop(bad)
            # margin * min(1, C / (N + eps)), in float64.
            margin = products.margin
            clip64 = torch.div(self.max_grad_norm * margin, bound.add_(_NORM_EPSILON))
            clip64.clamp_(max=margin)
            # Clip factors up to 2^-100 (norms above 2^100 C) are flushed to zero: the rest
            # stay normal in fp32 also times 1 / loss scale (>= 2^-24), so rounding them
            # moves each by 2^-24 at most, inside the margin; a subnormal one could move
            # by far more.
            clip = functional.threshold(clip64, _SMALLEST_CLIP, 0.0).float()
            for rule, layer in layers:
                rule.add_clipped_sums(layer, clip, sums)
        return dropped

    @staticmethod
    def _bounds(
        layers: list[tuple[_Rule, _Layer]], batch: int, device: torch.device
    ) -> torch.Tensor:
        """Per record, a float64 upper bound on the norm of its contribution as added:
        ``sqrt(sum of squared norms) + sqrt(sum of squared slacks)`` (Minkowski)."""
        squared = torch.zeros(batch, dtype=torch.float64, device=device)
        slack = None
        for rule, layer in layers:
            norms = rule.norms(layer)
            squared += norms.squared
            if norms.slack is not None:
                slack = norms.slack.square() if slack is None else slack.add_(norms.slack.square())
        bound = squared.sqrt_()
        return bound if slack is None else bound.add_(slack.sqrt_())

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
