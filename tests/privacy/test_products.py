"""Which kernel forms the clipped sums' products, its margin, and what it refuses."""

from __future__ import annotations

import pytest
import torch

from privacy import products as products_module
from privacy.clipping import ClippingEngine
from privacy.errors import PrivacyInputError
from privacy.products import (
    CUDA_BF16,
    FP32,
    ONEDNN_BF16,
    REDUCED_PRECISION_MARGIN,
    ProductKernel,
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


def _emulated_bf16_inputs(out: torch.Tensor, mat1: torch.Tensor, mat2: torch.Tensor) -> None:
    """The CUDA bf16 kernel's arithmetic on CPU: bf16-rounded factors, fp32 accumulation."""
    out.add_(mat1.bfloat16().float() @ mat2.bfloat16().float())


EMULATED = ProductKernel("emulated-bf16-inputs", REDUCED_PRECISION_MARGIN, _emulated_bf16_inputs)


def emulate_bf16_inputs_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a bf16 forward pass on CPU, products as the CUDA bf16 kernel forms them."""
    kernels = {**products_module._KERNELS, ("cpu", torch.bfloat16): EMULATED}
    monkeypatch.setattr(products_module, "_KERNELS", kernels)


def _cancelling_sequence_sample() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """One sample, two positions whose outer products almost cancel: inputs a and
    -a(1 + 2^-14) under the same output gradient g. Every element of a sits just below a
    bf16 rounding midpoint, so a rounds down and a(1 + 2^-14) rounds up: the rounded
    factors leave 2^-7 |a| where the true per-sample gradient has 2^-14 |a|."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64, bias=False)
    signs = torch.randint(0, 2, (64,)) * 2 - 1
    a = signs * 2.0 ** torch.randint(3, 6, (64,)) * (1 + 2.0**-8 - 2.0**-16)
    inputs = torch.stack([a, -a * (1 + 2.0**-14)])[None]  # (1 sample, 2 positions, 64)
    g = torch.randn(1, 1, 64).expand(1, 2, 64)
    return layer, inputs, g


def test_a_sequence_sample_stays_within_the_bound_under_bf16_input_products(monkeypatch) -> None:
    layer, inputs, g = _cancelling_sequence_sample()
    max_grad_norm = 1.0
    # What a bf16-input product would give for this sample: far above max_grad_norm.
    flat_g, flat_a = g.reshape(-1, 64), inputs.reshape(-1, 64)
    rounded = torch.zeros(64, 64)
    _emulated_bf16_inputs(rounded, flat_g.t().contiguous(), flat_a)
    exact = flat_g.t().double() @ flat_a.double()
    assert float(exact.norm()) < max_grad_norm < float(rounded.norm())

    emulate_bf16_inputs_on_cpu(monkeypatch)
    model = torch.nn.Sequential(layer)
    engine = ClippingEngine(model, max_grad_norm=max_grad_norm)
    with engine.capture(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs)
    assert engine.accumulate((out.float() * g).sum((1, 2))) == 0
    clipped = engine.take_sums()[layer.weight]
    engine.detach()
    assert float(clipped.norm()) <= max_grad_norm
    # Full fp32 products for the sequence: the true gradient, scaled by the margin only.
    expected = exact * REDUCED_PRECISION_MARGIN
    # (fp32 products of terms that cancel to 2^-14 keep about 10 bits.)
    assert float((clipped.double() - expected).norm() / expected.norm()) < 5e-3


def test_two_dimensional_samples_stay_within_the_bound_under_bf16_input_products(
    monkeypatch,
) -> None:
    """One outer product per sample: the margin covers the bf16 rounding of both factors."""
    emulate_bf16_inputs_on_cpu(monkeypatch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.ReLU(), torch.nn.Linear(48, 2))
    inputs = torch.randn(64, 32) * 5
    labels = torch.randint(0, 2, (64,))
    norms = []
    for i in range(64):
        engine = ClippingEngine(model, max_grad_norm=0.05)
        with engine.capture(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(inputs[i : i + 1])
        losses = torch.nn.functional.cross_entropy(
            logits.float(), labels[i : i + 1], reduction="none"
        )
        assert engine.accumulate(losses) == 0
        norms.append(engine.take_flat().double().norm())
        engine.detach()
    norms = torch.stack(norms)
    assert norms.max() <= 0.05
    assert (norms > 0.05 * REDUCED_PRECISION_MARGIN * 0.99).float().mean() > 0.9  # it binds
