"""The Gaussian mechanism's noise: float64 draws from a CSPRNG (:mod:`privacy.secure_gaussian`)."""

from __future__ import annotations

import numpy as np
import torch

from privacy.errors import PrivacyInputError
from privacy.secure_gaussian import SecureGaussian

__all__ = ["GaussianNoise"]


class GaussianNoise:
    """N(0, ``std``^2) for every coordinate, from ``source`` (default: ChaCha20 keyed by the OS).

    The draws are float64 (scaled by ``std`` in float64) and rounded once, to the dtype of
    the tensor they fill. (Drawing the next step's noise ahead in a worker thread was
    measured slower on 2 busy cores: the thread competes with torch's.)
    """

    def __init__(self, std: float, source: SecureGaussian | None = None) -> None:
        if not isinstance(std, int | float) or not std >= 0:
            raise PrivacyInputError(f"noise std must be >= 0, got {std!r}")
        self.std = float(std)
        self._source = source if source is not None else SecureGaussian()

    def fill(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` with fresh noise, in place."""
        if (
            tensor.device.type == "cpu"
            and tensor.is_contiguous()
            and tensor.dtype in (torch.float32, torch.float64)
        ):
            # Rounded into place by numpy, in the pass that scales the draws (a torch copy
            # of this size wakes its thread pool, which costs more than the copy).
            self._source.normal_into(tensor.detach().numpy().reshape(-1), self.std)
            return tensor
        draws = np.empty(tensor.numel())
        self._source.normal_into(draws, self.std)
        return tensor.copy_(torch.from_numpy(draws).view(tensor.shape))
