"""The Gaussian mechanism's noise."""

from __future__ import annotations

import torch

from privacy.errors import PrivacyInputError

__all__ = ["GaussianNoise"]


class GaussianNoise:
    """N(0, ``std``^2) for every coordinate, drawn from a secret generator."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        if not isinstance(std, int | float) or not std >= 0:
            raise PrivacyInputError(f"noise std must be >= 0, got {std!r}")
        self.std = float(std)
        self._generator = generator

    def fill(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` with fresh noise, in place."""
        return tensor.normal_(0.0, self.std, generator=self._generator)
