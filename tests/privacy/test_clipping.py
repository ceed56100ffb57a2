"""The fast clipping engine against Opacus' hooks-mode clipping, layer type by layer type."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from scipy import stats
from torch import nn
from torch.nn import functional

from privacy.clipping import (
    REDUCED_PRECISION_MARGIN,
    ClippingEngine,
    UnsupportedModule,
    _squared_row_norm_bounds,
)
from privacy.errors import PrivacyInputError
from privacy.sampling import PoissonSampler

FP32_TOLERANCE = 1e-5
# Under bf16 autocast Opacus forms per-sample gradients in bf16 (then casts them to fp32
# for clipping); the fast engine forms its products in fp32 from the same bf16 factors.
# The clipped sums then differ by bf16 rounding of per-sample gradients that largely cancel.
BF16_TOLERANCE = 1e-2


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return functional.cross_entropy(logits.float(), labels, reduction="none")


def opacus_clipped_sum(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, max_grad_norm: float, dtype=None
) -> list[torch.Tensor]:
    """Opacus' reference: hooks-mode per-sample gradients, its own clip_and_accumulate."""
    reference = copy.deepcopy(model)
    wrapped = GradSampleModule(reference, loss_reduction="sum")
    optimizer = DPOptimizer(
        torch.optim.SGD(reference.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=len(labels),
        loss_reduction="sum",
    )
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = wrapped(inputs)
    per_sample_loss(logits, labels).sum().backward()
    for param in reference.parameters():
        param.grad_sample = param.grad_sample.float()
    optimizer.pre_step()
    return [param.grad.detach().clone() for param in reference.parameters()]


def fast_clipped_sum(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, max_grad_norm: float, dtype=None
) -> list[torch.Tensor]:
    engine = ClippingEngine(model, max_grad_norm=max_grad_norm)
    with (
        engine.capture(),
        torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None),
    ):
        logits = model(inputs)
    assert engine.accumulate(per_sample_loss(logits, labels)) == 0
    sums = engine.take_sums()
    engine.detach()
    assert all(param.grad is None for param in model.parameters()), "p.grad must stay untouched"
    return [sums[param] for param in model.parameters()]


def max_relative_error(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return max(
        float((a - b).norm() / b.norm().clamp(min=1e-12))
        for a, b in zip(ours, reference, strict=True)
    )


class Tokens(nn.Module):
    """Embedding -> LayerNorm -> Linear on sequences -> GroupNorm (Opacus fallback) -> Linear."""

    def __init__(self, vocabulary: int = 40, width: int = 16, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width, padding_idx=padding_idx)
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, 8)
        self.group = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.mix(self.norm(self.embedding(ids)))  # (B, T, 8)
        hidden = self.group(hidden.transpose(1, 2)).transpose(1, 2)
        return self.head(hidden.mean(1))


def mlp(width: int = 32) -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, width), nn.ReLU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 2)
    )


def mlp_batch(rows: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 12, generator=generator) * 3, torch.randint(
        0, 2, (rows,), generator=generator
    )


def token_batch(
    rows: int = 48, steps: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (rows, steps), generator=generator)
    ids[:, :3] = ids[:, 3:4]  # repeated tokens in a sample: their gradients add before the norm
    return ids, torch.randint(0, 3, (rows,), generator=generator)


@pytest.mark.parametrize("max_grad_norm", [0.01, 1.0, 1e6])  # all, some, none clipped
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_layers_match_opacus_hooks(max_grad_norm: float, seed: int) -> None:
    torch.manual_seed(seed)
    model, (inputs, labels) = mlp(), mlp_batch(seed=seed)
    reference = opacus_clipped_sum(model, inputs, labels, max_grad_norm)
    assert max_relative_error(fast_clipped_sum(model, inputs, labels, max_grad_norm), reference) < (
        FP32_TOLERANCE
    )


@pytest.mark.parametrize("max_grad_norm", [0.01, 1.0, 1e6])
def test_embedding_layer_norm_sequences_and_fallback_match_opacus_hooks(
    max_grad_norm: float,
) -> None:
    torch.manual_seed(0)
    model, (ids, labels) = Tokens(), token_batch()
    reference = opacus_clipped_sum(model, ids, labels, max_grad_norm)
    assert max_relative_error(fast_clipped_sum(model, ids, labels, max_grad_norm), reference) < (
        FP32_TOLERANCE
    )


@pytest.mark.parametrize(("steps", "width"), [(4, 64), (64, 4)])
def test_sequence_linear_norms_by_ghost_and_direct_paths(steps: int, width: int) -> None:
    """Both ways of computing a sequence layer's per-sample norm agree with Opacus."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(width, width), nn.Tanh(), nn.Flatten(), nn.Linear(steps * width, 2)
    )
    inputs = torch.randn(32, steps, width)
    labels = torch.randint(0, 2, (32,))
    reference = opacus_clipped_sum(model, inputs, labels, 0.5)
    assert max_relative_error(fast_clipped_sum(model, inputs, labels, 0.5), reference) < (
        FP32_TOLERANCE
    )


def test_embedding_padding_row_gets_no_gradient_like_autograd() -> None:
    """padding_idx rows get no gradient in torch. (Opacus' embedding grad sampler does not
    zero them, so the reference here is autograd, one sample at a time.)"""
    torch.manual_seed(0)
    model, (ids, labels) = Tokens(padding_idx=0), token_batch(rows=12)
    ids[:, 5:] = 0
    max_grad_norm = 0.3
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(labels)):
        model.zero_grad()
        per_sample_loss(model(ids[i : i + 1]), labels[i : i + 1]).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        factor = min(1.0, max_grad_norm / (float(norm) + 1e-6))
        expected = [e + factor * g for e, g in zip(expected, grads, strict=True)]
    model.zero_grad(set_to_none=True)
    ours = fast_clipped_sum(model, ids, labels, max_grad_norm)
    assert max_relative_error(ours, expected) < FP32_TOLERANCE
    assert ours[0][0].abs().max() == 0


def test_bf16_autocast_matches_opacus_under_the_same_autocast() -> None:
    torch.manual_seed(0)
    model, (inputs, labels) = mlp(64), mlp_batch(512)
    reference = opacus_clipped_sum(model, inputs, labels, 1.0, torch.bfloat16)
    ours = fast_clipped_sum(model, inputs, labels, 1.0, torch.bfloat16)
    # Every clip factor carries the margin for oneDNN's bf16 products (see privacy.clipping).
    unmargined = [s / REDUCED_PRECISION_MARGIN for s in ours]
    assert max_relative_error(unmargined, reference) < BF16_TOLERANCE


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_every_clipped_per_sample_gradient_is_within_max_grad_norm(dtype) -> None:
    """One sample at a time, the clipped sum is that sample's clipped gradient: norm <= C."""
    torch.manual_seed(0)
    model, (inputs, labels) = mlp(64), mlp_batch(64)
    max_grad_norm = 0.05
    norms = []
    for i in range(len(labels)):
        sums = fast_clipped_sum(model, inputs[i : i + 1], labels[i : i + 1], max_grad_norm, dtype)
        norms.append(torch.sqrt(sum(s.double().square().sum() for s in sums)))
    norms = torch.stack(norms)
    assert norms.max() <= max_grad_norm * (1 + 1e-6)
    bound = max_grad_norm * (REDUCED_PRECISION_MARGIN if dtype is not None else 1.0)
    assert (norms > bound * 0.999).float().mean() > 0.9  # the bound binds


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_norm_bounds_are_never_below_the_exact_squared_norms(dtype) -> None:
    """The fp32 sums of squares behind every 2-D linear layer's norm, against exactly
    rounded float64 sums (each square of an fp32 value is exact in float64): rows with a
    huge dynamic range, long runs of tiny terms after a big one, subnormal squares, and
    entries near the fp32 overflow, which must give an infinite bound."""
    generator = torch.Generator().manual_seed(7)
    width = 4096
    scales = torch.logspace(-25, 18, 64, dtype=torch.float64)
    rows = torch.randn(64, width, generator=generator, dtype=torch.float64) * scales[:, None]
    rows[::3, 0] *= 1e6  # one dominant term, then thousands of small ones
    rows[1::5] = torch.rand(width, generator=generator, dtype=torch.float64) * 1e-22
    rows = rows.to(dtype)
    bounds = _squared_row_norm_bounds(rows)
    exact = torch.tensor(
        [math.fsum(v * v for v in row.double().tolist()) for row in rows], dtype=torch.float64
    )
    finite = torch.isfinite(bounds)
    assert (bounds[finite] >= exact[finite]).all()
    assert (bounds[finite] <= exact[finite] * (1 + 1e-3) + width * 2.0**-149).all()  # tight
    # Only rows whose fp32 sum overflows are infinite, and they must be.
    assert torch.equal(~finite, exact >= float(torch.finfo(torch.float32).max))
    assert (~finite).any() and finite.any()


def test_gradients_accumulate_over_physical_batches() -> None:
    torch.manual_seed(0)
    model, (inputs, labels) = mlp(), mlp_batch(100)
    engine = ClippingEngine(model, max_grad_norm=0.5)
    for part in torch.arange(100).split(30):
        with engine.capture():
            logits = model(inputs[part])
        engine.accumulate(per_sample_loss(logits, labels[part]))
    split = engine.take_sums()
    whole = fast_clipped_sum(model, inputs, labels, 0.5)
    assert max_relative_error([split[p] for p in model.parameters()], whole) < FP32_TOLERANCE


def test_an_empty_batch_gives_zero_sums() -> None:
    model = mlp()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with engine.capture():
        logits = model(torch.zeros(0, 12))
    assert engine.accumulate(per_sample_loss(logits, torch.zeros(0, dtype=torch.long))) == 0
    sums = engine.take_sums()
    assert set(sums) == set(model.parameters())
    assert all(float(s.abs().max()) == 0 for s in sums.values())


def test_loss_scale_is_divided_out_and_overflowed_records_contribute_zero() -> None:
    torch.manual_seed(0)
    model, (inputs, labels) = mlp(), mlp_batch(64)
    plain = fast_clipped_sum(model, inputs, labels, 1e6)
    engine = ClippingEngine(model, max_grad_norm=1e6)
    with engine.capture():
        logits = model(inputs)
    assert engine.accumulate(per_sample_loss(logits, labels) * 1024.0, loss_scale=1024.0) == 0
    scaled = engine.take_sums()
    assert max_relative_error([scaled[p] for p in model.parameters()], plain) < FP32_TOLERANCE
    with engine.capture():
        logits = model(inputs)
    losses = per_sample_loss(logits, labels) * 2.0
    losses = losses * torch.where(torch.arange(64) % 2 == 0, 1.0, float("inf"))  # odd overflow
    assert engine.accumulate(losses, loss_scale=2.0) == 32
    assert engine.nonfinite_records == 32
    overflowed = engine.take_sums()
    even = torch.arange(64) % 2 == 0
    expected = fast_clipped_sum(model, inputs[even], labels[even], 1e6)
    got = [overflowed[p] for p in model.parameters()]
    assert max_relative_error(got, expected) < FP32_TOLERANCE


def test_models_it_cannot_clip_exactly_are_refused() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(self.layer(x))

    class Loose(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    with pytest.raises(UnsupportedModule, match="Loose has trainable parameters"):
        ClippingEngine(Loose(), max_grad_norm=1.0)
    shared = Shared()
    engine = ClippingEngine(shared, max_grad_norm=1.0)
    with engine.capture():
        out = shared(torch.randn(3, 4))
    with pytest.raises(UnsupportedModule, match="more than once"):
        engine.accumulate(out.sum(1))
    with pytest.raises(PrivacyInputError, match="max_grad_norm"):
        ClippingEngine(mlp(), max_grad_norm=0)


@pytest.mark.parametrize(("rows", "rate"), [(20, 0.3), (7, 0.05), (5, 1.0)])
def test_poisson_sampling_has_opacus_distribution(rows: int, rate: float) -> None:
    """Each row in independently with probability q, like Opacus' per-row coin flips.

    Checked on 40,000 draws, made as epochs do (many steps per call): every row's
    inclusion rate, the batch-size distribution against Binomial(n, q) and against
    Opacus' own sampler, and independence of rows within a step and across steps.
    """
    draws = 40_000
    sampler = PoissonSampler(rows, rate, torch.Generator().manual_seed(7))
    opacus = UniformWithReplacementSampler(
        num_samples=rows, sample_rate=rate, generator=torch.Generator().manual_seed(7)
    )
    included = torch.zeros(draws, rows, dtype=torch.bool)
    opacus_sizes = []
    batches = [batch for _ in range(draws // 40) for batch in sampler.draws(40)]
    for i, batch in enumerate(batches):
        assert batch.dtype == torch.long and torch.all(batch[1:] > batch[:-1])
        included[i, batch] = True
        if i % len(opacus) == 0:
            opacus_batches = iter(opacus)
        opacus_sizes.append(len(next(opacus_batches)))
    if rate == 1.0:
        assert included.all()
        return
    rates = included.float().mean(0)
    sigma = (rate * (1 - rate) / draws) ** 0.5
    assert (rates - rate).abs().max() < 5 * sigma
    sizes = torch.bincount(included.sum(1), minlength=rows + 1).numpy()
    expected = stats.binom.pmf(range(rows + 1), rows, rate) * draws
    keep = expected > 5  # chi-square needs populated cells
    observed = np.append(sizes[keep], sizes[~keep].sum())
    expected = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    theirs = np.bincount(opacus_sizes, minlength=rows + 1)
    table = np.stack([sizes, theirs])[:, sizes + theirs > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3
    pair_sigma = (rate**2 * (1 - rate**2) / draws) ** 0.5
    both = (included[:, 0] & included[:, 1]).float().mean()
    assert abs(float(both) - rate**2) < 5 * pair_sigma
    # The last row of one step and the first of the next are neighbours in the process.
    across = (included[:-1, -1] & included[1:, 0]).float().mean()
    assert abs(float(across) - rate**2) < 5 * pair_sigma
    if rows == 7:  # P(empty) = 0.95^7 = 70%: empty batches happen and are returned
        assert sizes[0] > 0


def test_an_epoch_is_int_one_over_q_steps_of_the_right_rows() -> None:
    sampler = PoissonSampler(50, 0.013, torch.Generator().manual_seed(3))
    epoch = list(sampler.epoch())
    assert len(epoch) == sampler.steps_per_epoch == 76  # more than one 32-step draw
    assert all(len(b) == 0 or (b.min() >= 0 and b.max() < 50) for b in epoch)
    assert sum(len(b) for b in epoch) > 0
