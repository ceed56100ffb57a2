"""Canaries for the one-run privacy audit (see :mod:`privacy.empirical`), and their scores.

Two kinds: records drawn from the schema, scored black-box by their loss under the
trained model (below), and gradient canaries for the white-box audit
(:class:`GradientCanaries`).

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

from privacy.empirical import gradient_canary_scores
from privacy.noise import GaussianNoise
from privacy.sampling import entropy_generator
from training.errors import TrainingError, TrainingInputError
from training.features import EncodedTable, FeatureSpec, encode_table, input_columns
from training.model import Mlp

__all__ = [
    "CanarySet",
    "GradientCanaries",
    "audit_scores",
    "draw_canaries",
    "loss_scores",
    "with_canaries",
]

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


class GradientCanaries:
    """Dirac gradient canaries for the white-box one-run audit (Steinke, Nasr and
    Jagielski 2023): canary i is a record whose clipped gradient is ``max_grad_norm`` on
    flat-gradient coordinate ``coordinates[i]`` (distinct coordinates) and 0 elsewhere,
    included in the run with probability 1/2 (``included``).

    :meth:`noise` wraps the run's noise: each step's buffer starts as the noise plus every
    included canary that this step's Poisson draw (rate q, like every record) selects;
    the rest of the mechanism (the records' clipped sum, normalisation, the update) is
    the run's own. It also keeps, per step, each canary coordinate's value after the
    canaries are added: the noisy sum minus every other record's contribution, which is
    what the white-box auditor (who may know every other record) sees of the canary.
    Kept in memory only: a resumed run's scores cover the steps since it resumed.
    """

    def __init__(self, coordinates: np.ndarray, included: np.ndarray) -> None:
        coordinates = np.asarray(coordinates, dtype=np.int64)
        if coordinates.ndim != 1 or len(np.unique(coordinates)) != len(coordinates):
            raise TrainingInputError("gradient canaries need distinct coordinates")
        if included.dtype != np.bool_ or included.shape != coordinates.shape:
            raise TrainingInputError("included must be one boolean per canary")
        self.coordinates = coordinates
        self.included = included
        self._residuals: list[np.ndarray] = []
        self._sample_rate = 0.0
        self._max_grad_norm = 1.0

    @classmethod
    def draw(cls, count: int, parameters: int, rng: np.random.Generator) -> GradientCanaries:
        """``count`` canaries on distinct coordinates of ``parameters``, each included w.p. 1/2."""
        if not isinstance(count, int) or not 0 < count <= parameters:
            raise TrainingInputError(
                f"{count!r} gradient canaries need as many distinct coordinates; the model "
                f"has {parameters} parameters"
            )
        coordinates = rng.choice(parameters, size=count, replace=False)
        return cls(coordinates, rng.random(count) < 0.5)

    def noise(self, inner: GaussianNoise, sample_rate: float, max_grad_norm: float) -> _CanaryNoise:
        """The run's noise with the canaries added to each step's starting buffer."""
        self._sample_rate, self._max_grad_norm = sample_rate, max_grad_norm
        return _CanaryNoise(self, inner)

    @property
    def steps(self) -> int:
        return len(self._residuals)

    def scores(self, noise_multiplier: float) -> np.ndarray:
        """Each canary's white-box score (higher: more likely included)."""
        if not self._residuals:
            raise TrainingError("no step ran with the gradient canaries")
        residuals = np.stack(self._residuals) / self._max_grad_norm
        return gradient_canary_scores(residuals, self._sample_rate, noise_multiplier)

    def _start_step(self, buffer: torch.Tensor, generator: torch.Generator) -> None:
        index = torch.from_numpy(self.coordinates).to(buffer.device)
        drawn = torch.rand(len(index), generator=generator, device=buffer.device)
        sampled = (drawn < self._sample_rate) & torch.from_numpy(self.included).to(buffer.device)
        buffer.index_add_(0, index, sampled.to(buffer.dtype) * self._max_grad_norm)
        self._residuals.append(buffer.index_select(0, index).double().cpu().numpy())


class _CanaryNoise:
    def __init__(self, canaries: GradientCanaries, inner: GaussianNoise) -> None:
        self._canaries, self._inner = canaries, inner
        self._generator: torch.Generator | None = None
        self.std = inner.std

    def fill(self, tensor: torch.Tensor) -> torch.Tensor:
        self._inner.fill(tensor)
        if self._generator is None:
            self._generator = entropy_generator(tensor.device)
        self._canaries._start_step(tensor.view(-1), self._generator)
        return tensor
