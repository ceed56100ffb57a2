"""Canaries for the one-run privacy audit (see :mod:`privacy.empirical`), and their scores.

A canary is a record drawn from the *declared schema*, never from the data: each numeric
input uniformly within its declared bounds, each categorical input uniformly among its
declared categories, and a label uniformly among the label's two classes. Canaries are
thus public, independent of every private record, and mostly far from real records with
labels the data does not predict, so a model that memorises them reveals it in their loss.

Each canary is included in the audit run's training data independently with probability
1/2. After training, a canary's score is minus its loss under its own label: included
canaries should score higher, and the better they do the more privacy the run leaks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.nn import functional

from training.errors import TrainingInputError
from training.features import EncodedTable, FeatureSpec, encode_table, input_columns
from training.model import Mlp

__all__ = ["CanarySet", "audit_scores", "draw_canaries", "loss_scores", "with_canaries"]

# Rows per forward pass when scoring.
_SCORE_BATCH = 8192


@dataclass(frozen=True, slots=True)
class CanarySet:
    """``table`` holds every canary; ``included[i]`` says whether canary i is trained on."""

    table: EncodedTable
    included: np.ndarray

    def __post_init__(self) -> None:
        if self.included.dtype != np.bool_ or self.included.shape != (len(self.table),):
            raise TrainingInputError("included must be one boolean per canary")


def draw_canaries(
    columns: Sequence[FeatureSpec],
    label: str,
    count: int,
    rng: np.random.Generator,
    *,
    include_sensitive: bool = False,
) -> CanarySet:
    """``count`` canaries drawn from the schema ``columns``, each included with probability 1/2."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise TrainingInputError(f"canary count must be a positive integer, got {count!r}")
    label_spec = next((spec for spec in columns if spec.name == label), None)
    if label_spec is None:
        raise TrainingInputError(f"label column {label!r} is not in the schema")
    frame = pd.DataFrame(
        {
            spec.name: _draw(spec, count, rng)
            for spec in input_columns(columns, include_sensitive=include_sensitive)
        }
    )
    classes = label_spec.categories if label_spec.categories is not None else (0, 1)
    frame[label] = [classes[i] for i in rng.integers(0, len(classes), size=count)]
    table = encode_table(
        frame, columns, label, include_sensitive=include_sensitive, source="canaries"
    )
    return CanarySet(table=table, included=rng.random(count) < 0.5)


def with_canaries(train: EncodedTable, canaries: CanarySet) -> EncodedTable:
    """The training table plus the included canaries."""
    if train.feature_names != canaries.table.feature_names:
        raise TrainingInputError("canaries and training data have different feature layouts")
    keep = torch.from_numpy(canaries.included)
    added = int(keep.sum())
    people = None
    if train.people is not None:  # each canary is a person of its own (one record)
        first = int(train.people.max()) + 1 if len(train.people) else 0
        people = torch.cat([train.people, torch.arange(first, first + added)])
    return EncodedTable(
        features=torch.cat([train.features, canaries.table.features[keep]]),
        labels=torch.cat([train.labels, canaries.table.labels[keep]]),
        feature_names=train.feature_names,
        people=people,
    )


@torch.no_grad()
def loss_scores(model: Mlp, table: EncodedTable) -> np.ndarray:
    """Minus each row's cross-entropy loss under its own label (float64; higher: fitted)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        losses = [
            functional.cross_entropy(
                model(features.to(device)).float(), labels.to(device), reduction="none"
            ).cpu()
            for features, labels in zip(
                table.features.split(_SCORE_BATCH), table.labels.split(_SCORE_BATCH), strict=True
            )
        ]
    finally:
        model.train(was_training)
    return -torch.cat(losses).double().numpy()


def audit_scores(
    train: EncodedTable, canaries: CanarySet, fit: Callable[[EncodedTable], Mlp]
) -> np.ndarray:
    """Train with ``fit`` on ``train`` plus the included canaries; score every canary."""
    model = fit(with_canaries(train, canaries))
    return loss_scores(model, canaries.table)


def _draw(spec: FeatureSpec, count: int, rng: np.random.Generator) -> list[object] | np.ndarray:
    if spec.categories is not None:
        return [spec.categories[i] for i in rng.integers(0, len(spec.categories), size=count)]
    if spec.minimum is None or spec.maximum is None:
        raise TrainingInputError(
            f"column {spec.name!r}: canaries need the declared minimum and maximum"
        )
    return rng.uniform(spec.minimum, spec.maximum, size=count)
