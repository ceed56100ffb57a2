"""The tabular model: a multi-layer perceptron built from a frozen config.

Only layers whose per-sample gradients Opacus computes exactly are used (``nn.Linear``,
parameter-free activations and dropout). Batch normalisation mixes samples within a batch,
so a sample's gradient would depend on the others and clipping could not bound it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from training.errors import TrainingInputError

__all__ = ["Activation", "Mlp", "ModelConfig", "predict_proba"]

# Rows per forward pass when predicting; bounds memory on large splits.
_PREDICT_BATCH = 8192


class Activation(StrEnum):
    """Hidden-layer activations."""

    RELU = "relu"
    GELU = "gelu"
    TANH = "tanh"
    SILU = "silu"


_ACTIVATIONS: Mapping[Activation, Callable[[], nn.Module]] = MappingProxyType(
    {
        Activation.RELU: nn.ReLU,
        Activation.GELU: nn.GELU,
        Activation.TANH: nn.Tanh,
        Activation.SILU: nn.SiLU,
    }
)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The MLP's architecture: hidden widths (empty: logistic regression), activation, dropout."""

    hidden: tuple[int, ...] = (64, 64)
    activation: Activation = Activation.RELU
    dropout: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        hidden = tuple(self.hidden) if isinstance(self.hidden, list | tuple) else None
        if hidden is None or not all(_is_positive_int(width) for width in hidden):
            problems.append(f"hidden must be a list of positive integers, got {self.hidden!r}")
        else:
            object.__setattr__(self, "hidden", hidden)
        try:
            object.__setattr__(self, "activation", Activation(self.activation))
        except ValueError:
            valid = ", ".join(kind.value for kind in Activation)
            problems.append(f"unknown activation {self.activation!r} (valid: {valid})")
        if not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if problems:
            raise TrainingInputError("invalid model config: " + "; ".join(problems))

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-ready values."""
        return {
            "hidden": list(self.hidden),
            "activation": self.activation.value,
            "dropout": float(self.dropout),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Parse :meth:`to_json`'s output; unknown or missing keys raise TrainingInputError."""
        expected = {"hidden", "activation", "dropout"}
        if not isinstance(data, Mapping) or set(data) != expected:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise TrainingInputError(
                f"model config must have exactly the keys {sorted(expected)}, got {got}"
            )
        return cls(**data)


class Mlp(nn.Module):
    """``in_features -> hidden... -> out_features`` logits."""

    def __init__(self, config: ModelConfig, in_features: int, out_features: int = 2) -> None:
        super().__init__()
        if not _is_positive_int(in_features) or not _is_positive_int(out_features):
            raise TrainingInputError(
                f"in_features and out_features must be positive integers, got "
                f"{in_features!r} and {out_features!r}"
            )
        self.config = config
        self.in_features = in_features
        self.out_features = out_features
        layers: list[nn.Module] = []
        width = in_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[config.activation]()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits, one row per input row."""
        return self.layers(features)


@torch.no_grad()
def predict_proba(model: Mlp, features: torch.Tensor) -> torch.Tensor:
    """Class probabilities (rows x classes, float32, on CPU) in evaluation mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        chunks = [
            torch.softmax(model(chunk.to(device)).float(), dim=1).cpu()
            for chunk in features.split(_PREDICT_BATCH)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty((0, model.out_features))


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
