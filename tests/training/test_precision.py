"""Mixed precision under DP: clipped per-sample norms stay within max_grad_norm.

These tests watch Opacus' own clipping (``clipping: opacus-hooks``); the fast engine's
counterpart is in ``tests/privacy/test_clipping.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from opacus.optimizers import DPOptimizer

from training.errors import TrainingInputError
from training.features import EncodedTable
from training.model import ModelConfig
from training.precision import (
    LossScaler,
    Precision,
    precision_strategy,
    resolve_device,
    unscale_grad_samples,
)
from training.private_steps import ClippingMode
from training.trainer import DpConfig, TrainConfig, train_dp

CPU = torch.device("cpu")
MAX_GRAD_NORM = 0.5
ORIGINAL_CLIP = DPOptimizer.clip_and_accumulate


def clipped_norms(optimizer: DPOptimizer) -> torch.Tensor:
    """Each sample's gradient norm after Opacus' own clipping, sample by sample.

    Runs the real ``clip_and_accumulate`` on one-sample slices of the per-sample
    gradients, so the sum it produces is exactly that sample's clipped gradient.
    """
    params = optimizer.params
    full = [p.grad_sample for p in params]
    summed = [p.summed_grad for p in params]
    norms = []
    for i in range(len(full[0])):
        for param, grad_sample in zip(params, full, strict=True):
            param.grad_sample, param.summed_grad = grad_sample[i : i + 1], None
        ORIGINAL_CLIP(optimizer)
        norms.append(torch.sqrt(sum(p.summed_grad.double().pow(2).sum() for p in params)))
    for param, grad_sample, total in zip(params, full, summed, strict=True):
        param.grad_sample, param.summed_grad = grad_sample, total
    return torch.stack(norms)


def table(rows: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 6, generator=generator) * 4
    labels = (features[:, 0] > features[:, 1]).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(6)))


def record_clipping(
    monkeypatch: pytest.MonkeyPatch, precision: Precision, device: torch.device, tmp_path: Path
) -> tuple[list[torch.Tensor], set[torch.dtype], int]:
    """Train 10 steps, recording each sample's clipped norm, the dtypes clipped, and how
    many records had a non-finite gradient."""
    norms: list[torch.Tensor] = []
    dtypes: set[torch.dtype] = set()

    def recording_clip(optimizer: DPOptimizer) -> None:
        dtypes.update(p.grad_sample.dtype for p in optimizer.params)
        norms.append(clipped_norms(optimizer))
        ORIGINAL_CLIP(optimizer)

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", recording_clip)
    result = train_dp(
        table(400, 0),
        table(100, 1),
        ModelConfig(hidden=(32, 32)),
        TrainConfig(
            epochs=1,
            batch_size=40,
            learning_rate=0.5,
            precision=precision,
            patience=None,
            clipping=ClippingMode.OPACUS_HOOKS,
        ),
        DpConfig(noise_multiplier=1.0, max_grad_norm=MAX_GRAD_NORM, delta=1e-5, accountant="rdp"),
        run_dir=tmp_path,
        reserve_steps=lambda total: None,
        device=device,
        progress=False,
    )
    return norms, dtypes, result.nonfinite_records


@pytest.mark.parametrize(
    ("precision", "device"),
    [
        (Precision.FP32, CPU),
        (Precision.BF16, CPU),
        pytest.param(Precision.FP16, torch.device("cuda"), marks=pytest.mark.cuda),
        pytest.param(Precision.BF16, torch.device("cuda"), marks=pytest.mark.cuda),
    ],
)
def test_clipped_per_sample_norms_never_exceed_max_grad_norm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, precision: Precision, device: torch.device
) -> None:
    norms, dtypes, nonfinite = record_clipping(monkeypatch, precision, device, tmp_path)
    every = torch.cat(norms)
    assert len(norms) == 10 and len(every) > 100 and nonfinite == 0
    assert dtypes == {torch.float32}, "Opacus must clip fp32 per-sample gradients"
    assert every.max() <= MAX_GRAD_NORM * (1 + 1e-3)
    # The bound is tested where it binds: most samples are clipped, to max_grad_norm.
    assert (every > MAX_GRAD_NORM * 0.999).float().mean() > 0.5


def test_bf16_norms_computed_in_bf16_would_overshoot() -> None:
    """Why per-sample gradients go to fp32 before clipping, also in bf16."""
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(512, 300, generator=generator)
    param = torch.nn.Parameter(torch.zeros(300))
    optimizer = DPOptimizer(
        torch.optim.SGD([param], lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=512,
    )
    param.grad_sample = grads.bfloat16()
    assert clipped_norms(optimizer).max() > 1.001
    unscale_grad_samples([param], 1.0)
    assert clipped_norms(optimizer).max() <= 1.0 + 1e-6


def test_unscaling_before_clipping_recovers_fp32_clipping() -> None:
    """fp16 loss scaling: Opacus must clip unscaled per-sample gradients.

    Without unscaling, every sample's scaled norm exceeds max_grad_norm, so every sample
    is clipped to exactly max_grad_norm whatever its true norm. With the per-sample
    gradients unscaled in fp32 first, the clipped norms match fp32 clipping.
    """
    scale = 2.0**12
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(64, 10, generator=generator), dim=1)
    true_norms = torch.linspace(0.05, 3.0, 64)
    grads = directions * true_norms[:, None]
    param = torch.nn.Parameter(torch.zeros(10))
    optimizer = DPOptimizer(
        torch.optim.SGD([param], lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=64,
    )
    expected = true_norms.clamp(max=1.0).double()

    param.grad_sample = (grads * scale).half()
    without = clipped_norms(optimizer)
    assert torch.allclose(without, torch.ones(64, dtype=torch.float64), rtol=1e-3)
    assert (true_norms < 1.0).sum() > 15, "many samples should not have needed clipping"

    param.grad_sample = (grads * scale).half()
    assert unscale_grad_samples([param], scale) == 0
    assert param.grad_sample.dtype == torch.float32
    assert torch.allclose(clipped_norms(optimizer), expected, rtol=2e-3)


def test_records_whose_gradients_overflow_are_zeroed_not_skipped() -> None:
    scaler = LossScaler(enabled=True, scale=2.0**20)
    weight, bias = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(1))
    rows = torch.tensor([1.0, 1e-3, 2e-3])[:, None] * torch.ones(3, 4)
    weight.grad_sample = (rows * scaler.scale).half()  # record 0: 2**20 > fp16 max
    bias_rows = torch.tensor([[0.0], [float("nan")], [1e-3]])  # record 1: NaN
    bias.grad_sample = (bias_rows * scaler.scale).half()
    assert scaler.unscale_grad_samples([weight, bias]) == 2
    assert weight.grad_sample[:2].abs().max() == 0 and bias.grad_sample[:2].abs().max() == 0
    assert torch.allclose(weight.grad_sample[2], torch.full((4,), 2e-3), rtol=1e-3)
    assert abs(bias.grad_sample[2].item() - 1e-3) < 1e-6
    assert scaler.scale == 2.0**20, "the scale never moves"


def test_the_loss_scale_is_fixed_checked_on_resume_and_a_power_of_two() -> None:
    scaler = LossScaler(enabled=True, scale=8.0)
    restored = LossScaler(enabled=True, scale=8.0)
    restored.load_state_dict(scaler.state_dict())
    assert restored.scale == 8.0
    with pytest.raises(TrainingInputError, match="fixed scale"):
        LossScaler(enabled=True, scale=16.0).load_state_dict(scaler.state_dict())
    with pytest.raises(TrainingInputError, match="power of two"):
        LossScaler(enabled=True, scale=3.0)
    assert LossScaler(enabled=False).scale == 1.0


def test_fp16_is_refused_on_cpu() -> None:
    with pytest.raises(TrainingInputError, match="fp16 runs on cuda, not cpu"):
        precision_strategy("fp16", CPU)


def test_unknown_precision_lists_the_valid_ones() -> None:
    with pytest.raises(TrainingInputError, match="fp32, bf16, fp16"):
        precision_strategy("fp8", CPU)


def test_bf16_autocasts_activations_on_cpu_and_fp32_does_not() -> None:
    layer = torch.nn.Linear(4, 2)
    with precision_strategy("bf16", CPU).autocast(CPU):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with precision_strategy("fp32", CPU).autocast(CPU):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


def test_devices() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(TrainingInputError, match="valid: auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingInputError, match="no CUDA device"):
            resolve_device("cuda")
