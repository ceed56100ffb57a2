"""Which kernel forms the clipped sums' products, its margin, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from privacy.clipping import ClippingEngine
from privacy.errors import PrivacyInputError
from privacy.products import (
    CUDA_BF16,
    FP32,
    ONEDNN_BF16,
    REDUCED_PRECISION_MARGIN,
    product_kernel,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        (torch.float32, CPU, FP32),
        (torch.bfloat16, CPU, ONEDNN_BF16),
        (torch.float16, CPU, ONEDNN_BF16),
        (torch.float32, CUDA, FP32),
        (torch.bfloat16, CUDA, CUDA_BF16),
        # fp16's range cannot hold unscaled clipped factors: fp32 products.
        (torch.float16, CUDA, FP32),
    ],
)
def test_kernel_by_device_and_dtype(dtype, device, expected) -> None:
    kernel = product_kernel(dtype, device)
    assert kernel is expected
    assert (kernel.margin < 1.0) == (kernel is not FP32)


def test_margin_covers_bf16_rounding_of_both_factors_of_a_sample() -> None:
    """The worst case: every element of both factors just above a bf16 rounding midpoint.

    Rounded to nearest, such values move up by almost 2^-8 each; the outer product of
    the rounded factors then exceeds the exact one by almost (1 + 2^-8)^2: within 1/margin.
    """
    ulp = 2.0**-7  # bf16 spacing in [1, 2)
    worst = torch.full((300,), 1.0 + ulp / 2 + 2.0**-20, dtype=torch.float64)
    rounded = worst.float().bfloat16().double()
    assert float(rounded[0]) == 1.0 + ulp  # rounded up by almost half a spacing
    exact = torch.outer(worst, worst).norm()
    grown = torch.outer(rounded, rounded).norm() / exact
    assert 1 + 2.0**-8 < grown < 1 / REDUCED_PRECISION_MARGIN
    generator = torch.Generator().manual_seed(0)
    g, a = torch.randn(2, 1000, 64, generator=generator, dtype=torch.float64)
    for gi, ai in zip(g, a, strict=True):
        sample = torch.outer(gi, ai).norm()
        bf16 = torch.outer(gi.float().bfloat16().double(), ai.float().bfloat16().double())
        assert bf16.norm() * REDUCED_PRECISION_MARGIN <= sample


@pytest.mark.parametrize(
    ("backend", "device", "mode"),
    [
        (torch.backends.mkldnn.matmul, CPU, "bf16"),
        (torch.backends.mkldnn.matmul, CPU, "tf32"),
        (torch.backends.cuda.matmul, CUDA, "tf32"),
    ],
)
def test_a_process_wide_reduced_fp32_matmul_is_refused(backend, device, mode) -> None:
    """TF32 or bf16 for every fp32 product would shrink norms with no margin for it."""
    previous = backend.fp32_precision
    backend.fp32_precision = mode
    try:
        with pytest.raises(PrivacyInputError, match=f"{device.type} are set to '{mode}'"):
            product_kernel(torch.float32, device)
    finally:
        backend.fp32_precision = previous
    assert product_kernel(torch.float32, device) is FP32


def test_the_engine_refuses_to_clip_under_a_reduced_fp32_matmul() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    engine = ClippingEngine(model, max_grad_norm=1.0)
    with engine.capture():
        logits = model(torch.randn(16, 4))
    backends = (torch.backends.mkldnn.matmul, torch.backends.cuda.matmul)
    previous = [backend.fp32_precision for backend in backends]
    torch.set_float32_matmul_precision("medium")  # oneDNN fp32 products in bf16
    try:
        with pytest.raises(PrivacyInputError, match="full fp32"):
            engine.accumulate(logits.logsumexp(1))
    finally:
        for backend, mode in zip(backends, previous, strict=True):
            backend.fp32_precision = mode
    engine.detach()


def test_the_onednn_mode_is_on_for_the_products_only() -> None:
    before = torch.backends.mkldnn.matmul.fp32_precision
    with ONEDNN_BF16.active():
        assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    assert torch.backends.mkldnn.matmul.fp32_precision == before
    with FP32.active(), CUDA_BF16.active():
        assert torch.backends.mkldnn.matmul.fp32_precision == before
