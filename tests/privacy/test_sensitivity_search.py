"""An adversary searches for one record whose clipped contribution exceeds max_grad_norm.

For every layer type the fast engine supports (``nn.Linear`` on 2-D and on sequence
input, ``nn.Embedding``, ``nn.LayerNorm``, and two layers that fall back to Opacus' grad
samplers), for both sequence norm paths, with fp32 products and with products whose
inputs are rounded to bf16 (as oneDNN does on AMX CPUs, emulated here), the attacker
controls the record's input and its output gradient (the downstream weights and loss:
``loss = <layer(x), v>`` makes the output gradient exactly ``v``). It tries inputs
built to cancel (time steps or repeated tokens whose gradient terms nearly cancel), at
scales up to 1e6, then climbs from the best ones with random-direction gradient ascent on
the ratio. The contribution is what the engine adds to the sum for that record, normed
in float64; the claim is ``norm <= C (1 + 1e-6)`` whatever the input.

The same search against Opacus' ghost clipping finds contributions far above C on
sequence and embedding layers (the reason ``train.clipping: opacus-ghost`` is refused
for them) and none on 2-D linear layers; that also shows the search has teeth.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from torch import nn

from privacy.clipping import ClippingEngine, ProductPrecision, SequenceNorms

TOLERANCE = 1e-6
SCALES = (1.0, 1e2, 1e3, 1e4, 1e5, 1e6)
STEPS, WIDTH, VOCABULARY = 12, 6, 5


@dataclass(frozen=True)
class Case:
    """A layer, and how to draw an adversarial record (input, output gradient) for it."""

    name: str
    layer: Callable[[], nn.Module]
    record: Callable[[np.random.Generator, float], tuple[torch.Tensor, torch.Tensor]]
    sequence: bool = False


def _cancelling(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows sharing one large direction plus a small, random remainder."""
    common = rng.normal(size=shape[-1])
    tiny = 10.0 ** rng.uniform(-8, 0)
    rows = common + tiny * rng.normal(size=shape)
    return torch.tensor(scale * rows, dtype=torch.float32)


def _alternating(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Output gradients whose signs alternate over time steps: sum_t g_t a_t^T cancels."""
    signs = np.where(np.arange(shape[-2]) % 2 == 0, 1.0, -1.0)[:, None]
    base = rng.normal(size=shape[-1]) * signs
    if STEPS % 2 and rng.random() < 0.5:
        base[-1] *= 0  # an odd count: drop the unmatched step
    # Relative remainders near sqrt(fp32 unit) are where a squared-norm formula's rounding
    # can swallow the whole true norm.
    jitter = 10.0 ** rng.uniform(-6, -1) * rng.normal(size=shape)
    return torch.tensor(scale * (base + jitter), dtype=torch.float32)


def _random(rng: np.random.Generator, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(scale * rng.normal(size=shape), dtype=torch.float32)


def _pick(rng: np.random.Generator, scale: float, shape: tuple[int, ...], *, grad: bool):
    maker = (_alternating if grad else _cancelling) if rng.random() < 0.75 else _random
    return maker(rng, scale, shape)


def _linear2d(rng, scale):
    x = _random(rng, scale, (1, WIDTH))
    return x, _random(rng, 10.0 ** rng.uniform(-3, 3), (1, 4))


def _linear3d(rng, scale):
    x = _pick(rng, scale, (1, STEPS, WIDTH), grad=False)
    return x, _pick(rng, 10.0 ** rng.uniform(-3, 3), (1, STEPS, 4), grad=True)


def _embedding(rng, scale):
    tokens = rng.integers(0, VOCABULARY, size=(1, STEPS))
    if rng.random() < 0.75:
        tokens[:] = tokens[0, 0]  # one token repeated: its gradients add before the norm
    return torch.tensor(tokens), _pick(rng, scale, (1, STEPS, WIDTH), grad=True)


def _layer_norm(rng, scale):
    x = _pick(rng, scale, (1, STEPS, WIDTH), grad=False)
    return x, _pick(rng, 10.0 ** rng.uniform(-3, 3), (1, STEPS, WIDTH), grad=True)


def _group_norm(rng, scale):
    x = _pick(rng, scale, (1, STEPS, WIDTH), grad=False).transpose(1, 2).contiguous()
    v = _pick(rng, 10.0 ** rng.uniform(-3, 3), (1, STEPS, WIDTH), grad=True)
    return x, v.transpose(1, 2).contiguous()


def _conv(rng, scale):
    x = _pick(rng, scale, (1, STEPS, WIDTH), grad=False).transpose(1, 2).contiguous()
    v = _pick(rng, 10.0 ** rng.uniform(-3, 3), (1, STEPS - 2, 4), grad=True)
    return x, v.transpose(1, 2).contiguous()


CASES = {
    "linear-2d": Case("linear-2d", lambda: nn.Linear(WIDTH, 4), _linear2d),
    "linear-sequence": Case("linear-sequence", lambda: nn.Linear(WIDTH, 4), _linear3d, True),
    "embedding": Case("embedding", lambda: nn.Embedding(VOCABULARY, WIDTH), _embedding),
    "layer-norm": Case("layer-norm", lambda: nn.LayerNorm(WIDTH), _layer_norm),
    "group-norm (Opacus fallback)": Case("group-norm", lambda: nn.GroupNorm(2, WIDTH), _group_norm),
    "conv1d (Opacus fallback)": Case("conv1d", lambda: nn.Conv1d(WIDTH, 4, 3), _conv),
}


def _record_loss(output: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (output.float() * v).flatten(1).sum(1)


Contribution = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], float]


def fast_engine(products: ProductPrecision, path: SequenceNorms, autocast: bool) -> Contribution:
    """The fast engine's contribution norm / C for one record, as it adds it."""

    def ratio(layer: nn.Module, x: torch.Tensor, v: torch.Tensor, max_grad_norm: float) -> float:
        engine = ClippingEngine(
            layer, max_grad_norm=max_grad_norm, products=products, sequence_norms=path
        )
        with engine.capture(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output = layer(x)
        engine.accumulate(_record_loss(output, v))
        flat = engine.take_flat()
        engine.detach()
        return float(flat.double().norm()) / max_grad_norm

    return ratio


def opacus_ghost(layer: nn.Module, x: torch.Tensor, v: torch.Tensor, max_grad_norm: float) -> float:
    """Opacus' ghost clipping (fp32): its clipped gradient for one record, norm / C."""
    model = copy.deepcopy(layer)
    wrapped = GradSampleModuleFastGradientClipping(
        model, max_grad_norm=max_grad_norm, use_ghost_clipping=True, loss_reduction="sum"
    )
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=1,
        loss_reduction="sum",
    )
    loss = _record_loss(wrapped(x), v)
    DPTensorFastGradientClipping(wrapped, optimizer, loss, "sum").backward()
    norm = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
    wrapped._close()
    return norm / max_grad_norm


def search(case: Case, contribution: Contribution, *, seed: int, tries: int, climbs: int) -> float:
    """Largest contribution / C found: random records at every scale, then hill climbing
    along random directions (zeroth-order gradient ascent) from the best few."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    layer = case.layer()
    found: list[tuple[float, torch.Tensor, torch.Tensor, float]] = []
    for scale in SCALES:
        for _ in range(tries):
            max_grad_norm = float(rng.choice([0.1, 1.0]))
            x, v = case.record(rng, scale)
            found.append((contribution(layer, x, v, max_grad_norm), x, v, max_grad_norm))
    found.sort(key=lambda entry: entry[0], reverse=True)
    best = found[0][0]
    for ratio, x, v, max_grad_norm in found[:3]:
        step = 1e-3
        for _ in range(climbs):
            dx = x.clone() if not x.is_floating_point() else x * (1 + step * torch.randn_like(x))
            dv = v * (1 + step * torch.randn_like(v))
            candidate = contribution(layer, dx, dv, max_grad_norm)
            if candidate > ratio:
                ratio, x, v = candidate, dx, dv
                step *= 1.5
            else:
                step = max(step / 1.5, 1e-7)
        best = max(best, ratio)
    return best


ENGINE_CONFIGS = [
    pytest.param(ProductPrecision.FP32, SequenceNorms.DIRECT, False, id="fp32-direct"),
    pytest.param(ProductPrecision.FP32, SequenceNorms.GHOST, False, id="fp32-ghost"),
    pytest.param(ProductPrecision.EMULATED_BF16, SequenceNorms.DIRECT, True, id="bf16-direct"),
    pytest.param(ProductPrecision.EMULATED_BF16, SequenceNorms.GHOST, True, id="bf16-ghost"),
]


@pytest.mark.parametrize(("products", "path", "autocast"), ENGINE_CONFIGS)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_no_record_exceeds_max_grad_norm(case, products, path, autocast) -> None:
    if path is SequenceNorms.GHOST and not CASES[case].sequence:
        pytest.skip("one norm path only for this layer type")
    engine = fast_engine(products, path, autocast)
    worst = search(CASES[case], engine, seed=0, tries=8, climbs=20)
    assert worst <= 1 + TOLERANCE
    # The bound binds: some records are clipped to about C, not far below. (The ghost
    # path under bf16 products pays its additive rounding bound, ~2^-6 sqrt(T), on
    # every record.)
    ghost_bf16 = autocast and path is SequenceNorms.GHOST and CASES[case].sequence
    assert worst > (0.9 if ghost_bf16 else 0.98)


@pytest.mark.slow
@pytest.mark.parametrize(("products", "path", "autocast"), ENGINE_CONFIGS)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_record_exceeds_max_grad_norm_long_search(case, products, path, autocast, seed):
    if path is SequenceNorms.GHOST and not CASES[case].sequence:
        pytest.skip("one norm path only for this layer type")
    engine = fast_engine(products, path, autocast)
    assert search(CASES[case], engine, seed=seed, tries=60, climbs=150) <= 1 + TOLERANCE


@pytest.mark.parametrize(("case", "above"), [("linear-sequence", 2.0), ("embedding", 1 + 1e-3)])
def test_opacus_ghost_clipping_cannot_bound_sequences_or_embeddings(case, above) -> None:
    """Why ``opacus-ghost`` is refused for these layers: the search finds records above C
    (far above on sequences, where its fp32 ghost formula cancels; on embeddings its
    per-token norms and autograd's backward round the cancelling sum differently), so it
    would catch the same flaws in the fast engine."""
    assert search(CASES[case], opacus_ghost, seed=0, tries=12, climbs=10) > above


def test_opacus_ghost_clipping_bounds_2d_linear_layers() -> None:
    assert search(CASES["linear-2d"], opacus_ghost, seed=0, tries=8, climbs=10) <= 1 + TOLERANCE


@pytest.mark.parametrize(
    ("x_scale", "v_scale"),
    [(1e30, 1e-25), (1e-30, 1e25), (1e19, 1e19), (1e36, 1e-3), (1e-20, 1e-20)],
    ids=["underflowing-gradient", "underflowing-input", "overflowing-squares", "huge", "tiny"],
)
@pytest.mark.parametrize("case", ["linear-2d", "linear-sequence", "layer-norm"])
def test_extreme_dynamic_ranges_stay_within_the_bound(case, x_scale, v_scale) -> None:
    """Beyond the search's 1e6: fp32 squares that underflow or overflow, and clip factors
    small enough to be subnormal, are bounded too (or the record is dropped as non-finite)."""
    rng = np.random.default_rng(0)
    layer = CASES[case].layer()
    for products, path, autocast in [
        (p.values[0], p.values[1], p.values[2]) for p in ENGINE_CONFIGS
    ]:
        ratio = fast_engine(products, path, autocast)
        for _ in range(5):
            x, v = CASES[case].record(rng, 1.0)
            assert ratio(layer, x * x_scale, v * v_scale, 1.0) <= 1 + TOLERANCE
