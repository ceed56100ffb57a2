"""A crafted record cannot change whether a step is taken: it contributes zero instead.

The attack (before the fix): one record with a feature above fp16's range forced an fp16
overflow skip in every step that sampled it, and a non-finite gradient aborted bf16/fp32
runs at the first step that sampled it. Both are functions of one record, released
without noise. Here every step runs, every step is counted, the model stays finite, and
the crafted record's contribution is zero (its rows are zeroed before any product).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from privacy.clipping import ClippingEngine
from training.features import EncodedTable
from training.model import ModelConfig
from training.precision import Precision, PrecisionStrategy, precision_strategy
from training.private_steps import ClippingMode
from training.trainer import DpConfig, TrainConfig, train_dp

ROWS, WIDTH = 60, 5
# fp16 on CPU: production refuses it (slow kernels), but autocast runs it, so the fixed
# loss scale and the overflow path are exercised here as on CUDA.
FP16_ON_CPU = PrecisionStrategy(Precision.FP16, torch.float16, frozenset({"cpu"}), True)


def crafted_table(value: float) -> EncodedTable:
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(ROWS, WIDTH, generator=generator)
    labels = (features[:, 0] > features[:, 1]).long()
    features[7, 2] = value  # the attacker's record
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(WIDTH)))


def train(tmp_path: Path, value: float, precision: Precision, clipping: ClippingMode):
    # sample_rate 1: every step samples the crafted record.
    return train_dp(
        crafted_table(value),
        crafted_table(0.5),
        ModelConfig(hidden=(8,)),
        TrainConfig(
            epochs=6,
            batch_size=ROWS,
            learning_rate=0.1,
            patience=None,
            precision=precision,
            clipping=clipping,
        ),
        DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-3, accountant="rdp"),
        run_dir=tmp_path,
        reserve_steps=lambda total: None,
        progress=False,
    )


@pytest.mark.parametrize(
    ("clipping", "precision"),
    [
        (ClippingMode.FAST, Precision.FP32),
        (ClippingMode.FAST, Precision.BF16),
        (ClippingMode.FAST, Precision.FP16),
        (ClippingMode.OPACUS_HOOKS, Precision.FP32),
        (ClippingMode.OPACUS_HOOKS, Precision.FP16),
    ],
)
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e15])
def test_a_crafted_record_changes_no_step(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clipping: ClippingMode,
    precision: Precision,
    value: float,
) -> None:
    def strategy(name: Precision | str, device: torch.device) -> PrecisionStrategy:
        return (
            FP16_ON_CPU if Precision(name) is Precision.FP16 else precision_strategy(name, device)
        )

    monkeypatch.setattr("training.trainer.precision_strategy", strategy)
    result = train(tmp_path, value, precision, clipping)
    # Every step taken and counted (train_dp also cross-checks the engines' accountants).
    assert result.steps == result.accounted_steps == result.history[0].steps == 6
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    # 1e15 is finite in fp32 and bf16 (clipped like any record) but not in fp16.
    overflows = value != 1e15 or precision is Precision.FP16
    assert result.nonfinite_records == (6 if overflows else 0)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_crafted_record_adds_exactly_nothing(value: float, dtype: torch.dtype) -> None:
    """The clipped sum with the record equals the clipped sum without it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2))
    table = crafted_table(value)
    keep = torch.arange(ROWS) != 7

    def clipped(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        engine = ClippingEngine(model, max_grad_norm=0.5)
        with engine.capture(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(features)
        losses = functional.cross_entropy(logits.float(), labels, reduction="none")
        scale = 2.0**10 if dtype == torch.float16 else 1.0
        dropped = engine.accumulate(losses * scale, loss_scale=scale)
        flat = engine.take_flat().clone()
        engine.detach()
        return flat, dropped

    with_record, dropped = clipped(table.features, table.labels)
    without, none = clipped(table.features[keep], table.labels[keep])
    finite_in_dtype = value == 1e5 and dtype != torch.float16
    assert (dropped, none) == (0 if finite_in_dtype else 1, 0)
    if not finite_in_dtype:
        assert torch.allclose(with_record, without, rtol=1e-5, atol=1e-7)
