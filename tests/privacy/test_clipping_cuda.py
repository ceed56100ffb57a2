"""The fast clipping engine on a CUDA device: exact against Opacus hooks, bounded per sample.

Marked ``cuda``: skipped without a CUDA device, run by ``make gpu-check``. The CPU
counterparts are in ``test_clipping.py``; these repeat the checks where the kernels
differ (cuBLAS products, bf16 inputs with fp32 output, noise drawn by the device's
generator).
"""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn import functional

from privacy.clipping import REDUCED_PRECISION_MARGIN, ClippingEngine
from privacy.errors import PrivacyInputError
from privacy.noise import GaussianNoise
from privacy.products import CUDA_BF16, FP32, product_kernel
from tests.privacy.test_products import _cancelling_sequence_sample

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
FP32_TOLERANCE = 1e-5
BF16_TOLERANCE = 1e-2  # as on CPU: Opacus forms bf16 per-sample gradients, the engine does not


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 300), nn.GELU(), nn.Linear(300, 2)
    )


class Tokens(nn.Module):
    """Embedding -> LayerNorm -> Linear over a sequence -> GroupNorm (Opacus) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(40, 16)
        self.norm = nn.LayerNorm(16)
        self.mix = nn.Linear(16, 8)
        self.group = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.mix(self.norm(self.embedding(ids)))
        hidden = self.group(hidden.transpose(1, 2)).transpose(1, 2)
        return self.head(hidden.mean(1))


def mlp_batch(rows: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, 12, generator=generator) * 3
    return inputs.to(CUDA), torch.randint(0, 2, (rows,), generator=generator).to(CUDA)


def token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (48, 10), generator=generator)
    ids[:, :3] = ids[:, 3:4]  # repeated tokens: their gradients add before the norm
    return ids.to(CUDA), torch.randint(0, 3, (48,), generator=generator).to(CUDA)


def autocast(dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return functional.cross_entropy(logits.float(), labels, reduction="none")


def opacus_sum(model, inputs, labels, max_grad_norm, dtype=None) -> list[torch.Tensor]:
    reference = copy.deepcopy(model)
    wrapped = GradSampleModule(reference, loss_reduction="sum")
    optimizer = DPOptimizer(
        torch.optim.SGD(reference.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=len(labels),
        loss_reduction="sum",
    )
    with autocast(dtype):
        logits = wrapped(inputs)
    per_sample_loss(logits, labels).sum().backward()
    for param in reference.parameters():
        param.grad_sample = param.grad_sample.float()
    optimizer.pre_step()
    return [param.grad.detach().clone() for param in reference.parameters()]


def fast_sum(model, inputs, labels, max_grad_norm, dtype=None, scale=1.0) -> list[torch.Tensor]:
    engine = ClippingEngine(model, max_grad_norm=max_grad_norm)
    with engine.capture(), autocast(dtype):
        logits = model(inputs)
    assert engine.accumulate(per_sample_loss(logits, labels) * scale, loss_scale=scale) == 0
    sums = engine.take_sums()
    engine.detach()
    assert all(s.dtype == torch.float32 and s.device.type == "cuda" for s in sums.values())
    return [sums[param] for param in model.parameters()]


def max_relative_error(ours, reference) -> float:
    return max(
        float((a - b).norm() / b.norm().clamp(min=1e-12))
        for a, b in zip(ours, reference, strict=True)
    )


@pytest.mark.parametrize("max_grad_norm", [0.01, 1.0, 1e6])  # all, some, none clipped
@pytest.mark.parametrize("build", [mlp, Tokens], ids=["mlp", "tokens"])
def test_fp32_matches_opacus_hooks_on_the_device(build, max_grad_norm: float) -> None:
    torch.manual_seed(0)
    model = build().to(CUDA)
    inputs, labels = mlp_batch() if build is mlp else token_batch()
    reference = opacus_sum(model, inputs, labels, max_grad_norm)
    ours = fast_sum(model, inputs, labels, max_grad_norm)
    assert max_relative_error(ours, reference) < FP32_TOLERANCE


def test_bf16_uses_bf16_products_with_fp32_output_and_matches_opacus() -> None:
    assert product_kernel(torch.bfloat16, CUDA) is CUDA_BF16
    assert product_kernel(torch.float16, CUDA) is FP32
    torch.manual_seed(0)
    model, (inputs, labels) = mlp().to(CUDA), mlp_batch(512)
    reference = opacus_sum(model, inputs, labels, 1.0, torch.bfloat16)
    ours = fast_sum(model, inputs, labels, 1.0, torch.bfloat16)
    unmargined = [s / REDUCED_PRECISION_MARGIN for s in ours]
    assert max_relative_error(unmargined, reference) < BF16_TOLERANCE


def test_the_bf16_product_kernel_returns_fp32_from_bf16_factors() -> None:
    generator = torch.Generator(device=CUDA).manual_seed(0)
    g = torch.randn(512, 300, device=CUDA, generator=generator)
    a = torch.randn(512, 64, device=CUDA, generator=generator)
    out = torch.zeros(300, 64, device=CUDA)
    CUDA_BF16.addmm_(out, g.t(), a)
    exact = g.bfloat16().double().t() @ a.bfloat16().double()  # the rounded factors, exactly
    assert out.dtype == torch.float32
    # fp32 accumulation of exact bf16 x bf16 products: far closer than a bf16 output (2^-8).
    assert float((out.double() - exact).norm() / exact.norm()) < 1e-5


@pytest.mark.parametrize(
    ("dtype", "scale"), [(None, 1.0), (torch.bfloat16, 1.0), (torch.float16, 2.0**10)]
)
def test_every_clipped_per_sample_gradient_is_within_max_grad_norm_on_the_device(
    dtype, scale: float
) -> None:
    """One sample at a time the clipped sum is that sample's clipped gradient: norm <= C.

    fp16 runs with a static loss scale, divided out by the engine before any norm.
    """
    torch.manual_seed(0)
    model, (inputs, labels) = mlp().to(CUDA), mlp_batch(64)
    max_grad_norm = 0.05
    norms = []
    for i in range(len(labels)):
        sums = fast_sum(model, inputs[i : i + 1], labels[i : i + 1], max_grad_norm, dtype, scale)
        norms.append(torch.sqrt(sum(s.double().square().sum() for s in sums)))
    norms = torch.stack(norms)
    assert norms.max() <= max_grad_norm * (1 + 1e-6)
    bound = max_grad_norm * product_kernel(dtype or torch.float32, CUDA).margin
    assert (norms > bound * 0.999).float().mean() > 0.9  # the bound binds


def test_fp16_static_loss_scale_is_divided_out_before_clipping() -> None:
    torch.manual_seed(0)
    model, (inputs, labels) = mlp().to(CUDA), mlp_batch(256)
    plain = fast_sum(model, inputs, labels, 1.0)
    scaled = fast_sum(model, inputs, labels, 1.0, torch.float16, 2.0**12)
    # fp16 activations, fp32 norms and products: fp16 rounding only, not the scale.
    assert max_relative_error(scaled, plain) < 2e-2


def test_noise_reaches_the_device_with_the_right_spread() -> None:
    model = mlp().to(CUDA)
    std = 3.0
    engine = ClippingEngine(model, max_grad_norm=1.0, noise=GaussianNoise(std))
    flat = engine.take_flat()
    assert flat.device.type == "cuda" and flat.dtype == torch.float32
    n = flat.numel()
    assert abs(float(flat.mean())) < 5 * std / n**0.5
    assert abs(float(flat.std()) / std - 1) < 5 * (0.5 / n) ** 0.5
    engine.detach()


def test_tf32_matmul_is_refused_on_the_device() -> None:
    model, (inputs, labels) = mlp().to(CUDA), mlp_batch(32)
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with engine.capture():
        logits = model(inputs)
    previous = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        with pytest.raises(PrivacyInputError, match="full fp32"):
            engine.accumulate(per_sample_loss(logits, labels))
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous


def test_a_cancelling_sequence_sample_stays_within_the_bound_under_bf16() -> None:
    """Sequence layers form their products in full fp32 on the device too (see
    ``test_products.py``: bf16-input products would give this sample 9x the bound)."""
    layer, inputs, g = _cancelling_sequence_sample()
    model = nn.Sequential(layer).to(CUDA)
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with engine.capture(), autocast(torch.bfloat16):
        out = model(inputs.to(CUDA))
    assert engine.accumulate((out.float() * g.to(CUDA)).sum((1, 2))) == 0
    clipped = engine.take_sums()[layer.weight]
    engine.detach()
    assert float(clipped.norm()) <= 1.0
