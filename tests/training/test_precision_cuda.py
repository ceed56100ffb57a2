"""Mixed precision on a CUDA device: bf16 autocast, fp16 loss scaling, DP training runs.

Marked ``cuda``: skipped without a CUDA device, run by ``make gpu-check``. The Opacus
clipping counterparts (per-sample norms under fp16 and bf16 on CUDA) are the CUDA
cases of ``test_precision.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from privacy.clipping import ClippingEngine
from training.features import EncodedTable
from training.model import ModelConfig
from training.precision import precision_strategy
from training.private_steps import ClippingMode
from training.trainer import DpConfig, TrainConfig, train_dp

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")


def table(rows: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 6, generator=generator) * 4
    labels = (features[:, 0] > features[:, 1]).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(6)))


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_autocast_runs_activations_low_and_keeps_parameters_fp32(precision, dtype) -> None:
    layer = torch.nn.Linear(4, 2).to(CUDA)
    strategy = precision_strategy(precision, CUDA)
    with strategy.autocast(CUDA):
        assert layer(torch.ones(3, 4, device=CUDA)).dtype == dtype
    assert layer.weight.dtype == torch.float32
    assert strategy.loss_scaling == (precision == "fp16")


def test_fp16_static_loss_scale_recovers_the_fp32_clipped_sum() -> None:
    """A fixed loss scale multiplies the loss and is divided out in fp32 before any norm:
    the clipped sum is fp32's up to fp16 activation rounding, not off by the scale. A
    scale that overflows fp16 makes every record contribute zero (counted), never clipped."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)).to(
        CUDA
    )
    data = table(256, 0)
    features, labels = data.features.to(CUDA), data.labels.to(CUDA)

    def clipped(fp16: bool, scale: float) -> tuple[int, torch.Tensor]:
        engine = ClippingEngine(model, max_grad_norm=0.5)
        with engine.capture(), torch.autocast("cuda", torch.float16, enabled=fp16):
            logits = model(features)
        losses = functional.cross_entropy(logits.float(), labels, reduction="none")
        dropped = engine.accumulate(losses * scale, loss_scale=scale)
        flat = engine.take_flat().clone()
        engine.detach()
        return dropped, flat

    _, exact = clipped(False, 1.0)
    dropped, scaled = clipped(True, 2.0**12)
    assert dropped == 0
    assert float((scaled - exact).norm() / exact.norm()) < 2e-2
    # Beyond fp16's range every record overflows: each contributes zero, counted.
    assert clipped(True, 2.0**24)[0] == len(labels)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("clipping", [ClippingMode.FAST, ClippingMode.OPACUS_HOOKS])
def test_dp_training_runs_on_the_device(tmp_path: Path, precision: str, clipping) -> None:
    result = train_dp(
        table(2000, 0),
        table(400, 1),
        ModelConfig(hidden=(32, 32)),
        TrainConfig(
            epochs=2,
            batch_size=100,
            learning_rate=0.5,
            precision=precision,
            patience=None,
            clipping=clipping,
        ),
        DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, accountant="rdp"),
        run_dir=tmp_path,
        reserve_steps=lambda total: None,
        device=CUDA,
        progress=False,
    )
    assert result.accounted_steps == result.steps == 40  # 2 epochs of 1 / (100 / 2000)
    assert 0 < result.epsilon < float("inf")
    assert result.nonfinite_records == 0
    assert all(math.isfinite(record.val_loss) for record in result.curve)
    # The model learnt the rule f0 > f1 on the device.
    model = result.model.eval()
    test = table(1000, 2)
    with torch.no_grad():
        accuracy = (model(test.features).argmax(1) == test.labels).float().mean()
    assert accuracy > 0.8
