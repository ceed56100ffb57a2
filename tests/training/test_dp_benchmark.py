"""The benchmark's workloads and variants: what ``make gpu-check`` benches must be sound."""

from __future__ import annotations

import pytest
import torch

from training.dp_benchmark import (
    VARIANTS,
    clipping_error_vs_opacus,
    default_variants,
    run_benchmark,
    transformer_workload,
    workload_for,
)
from training.errors import TrainingInputError

CPU = torch.device("cpu")


def tiny_transformer():
    return transformer_workload(64, 16, steps=8, vocabulary=50, width=16, heads=2, layers=1)


def test_the_transformer_workload_is_clipped_exactly_like_opacus_hooks() -> None:
    """Every parameter of the encoder (embeddings, attention, LayerNorm, MLP) has a
    non-vanishing gradient and the fast engine's clipped sum matches Opacus on it."""
    assert clipping_error_vs_opacus(tiny_transformer(), CPU, None) < 1e-5
    assert clipping_error_vs_opacus(tiny_transformer(), CPU, torch.bfloat16) < 2e-2


def test_named_and_width_workloads() -> None:
    assert workload_for("transformer", 10, 4).features.dtype == torch.long
    mlp = workload_for("8-16-2", 10, 4)
    assert mlp.features.shape == (10, 8) and mlp.batch_size == 4


def test_fp16_variants_run_on_cuda_only() -> None:
    assert {"fast_fp16", "nonprivate_fp16"} <= set(VARIANTS)
    assert set(default_variants(CPU)) == set(VARIANTS) - {"fast_fp16", "nonprivate_fp16"}
    with pytest.raises(TrainingInputError, match="variant fast_fp16: precision fp16 runs on cuda"):
        run_benchmark(workload_for("8-16-2", 64, 8), device=CPU, variants=("fast_fp16",))
