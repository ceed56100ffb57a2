"""Padding Poisson batches to a row multiple changes the shapes, never the clipped sum."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from privacy.clipping import ClippingEngine
from training.private_steps import PaddedGather, row_multiple


def clipped_sum(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    engine = ClippingEngine(model, max_grad_norm=0.3)
    with engine.capture():
        logits = model(features)[: len(labels)]
    assert engine.accumulate(functional.cross_entropy(logits, labels, reduction="none")) == 0
    flat = engine.take_flat().clone()
    engine.detach()
    return flat


def test_padding_rows_add_nothing_to_the_clipped_sum() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))
    features, labels = torch.randn(100, 6), torch.randint(0, 3, (100,))
    index = torch.tensor([3, 7, 8, 20, 41, 42, 43, 60, 99])
    padded_features, padded_labels = PaddedGather(features, labels, 32)(index)
    assert padded_features.shape == (32, 6) and padded_features[9:].abs().sum() == 0
    assert torch.equal(padded_labels, labels[index])
    plain = clipped_sum(model, features[index], labels[index])
    padded = clipped_sum(model, padded_features, padded_labels)
    assert torch.allclose(padded, plain, rtol=1e-6, atol=1e-7)
    assert plain.abs().max() > 0


def test_whole_multiples_and_empty_batches_are_not_padded() -> None:
    features, labels = torch.randn(10, 2), torch.arange(10)
    gather = PaddedGather(features, labels, 4)
    assert gather(torch.arange(8))[0].shape == (8, 2)
    assert gather(torch.arange(0))[0].shape == (0, 2)
    assert gather(torch.arange(5))[0].shape == (8, 2)


def test_only_low_precision_on_cpu_is_padded() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert row_multiple(torch.bfloat16, cpu) == 32
    assert row_multiple(torch.float32, cpu) == 1
    assert row_multiple(torch.bfloat16, cuda) == 1
