"""The Gaussian mechanism's noise: float64 draws from a CSPRNG (:mod:`privacy.secure_gaussian`)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from privacy.errors import PrivacyInputError
from privacy.secure_gaussian import SecureGaussian

__all__ = ["GaussianNoise"]


class GaussianNoise:
    """N(0, ``std``^2) for every coordinate, from ``source`` (default: ChaCha20 keyed by the OS).

    The draws are float64 (scaled by ``std`` in float64) and rounded once, to the dtype of
    the tensor they fill. With ``prefetch`` (the default), the next fill's draws are made
    by a worker thread while the caller computes (the noise does not depend on the data,
    so drawing it early changes nothing; the sampler's numpy and OpenSSL work runs beside
    the training step's single-threaded Python parts).
    """

    def __init__(
        self, std: float, source: SecureGaussian | None = None, *, prefetch: bool = True
    ) -> None:
        if not isinstance(std, int | float) or not std >= 0:
            raise PrivacyInputError(f"noise std must be >= 0, got {std!r}")
        self.std = float(std)
        self._source = source if source is not None else SecureGaussian()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="noise") if prefetch else None
        self._next: tuple[int, Future[np.ndarray]] | None = None

    def _draw(self, count: int) -> np.ndarray:
        draws = self._source.standard_normal(count)
        draws *= self.std
        return draws

    def fill(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` with fresh noise, in place."""
        count = tensor.numel()
        pending, self._next = self._next, None
        if pending is not None and pending[0] == count:
            draws = pending[1].result()
        else:
            if pending is not None:
                pending[1].result()  # one user of the stream at a time
            draws = self._draw(count)
        if self._pool is not None:
            self._next = (count, self._pool.submit(self._draw, count))
        if tensor.device.type == "cpu" and tensor.is_contiguous():
            # Rounded into place by numpy, in one pass (a torch copy of this size wakes
            # its thread pool, which costs more than the copy).
            tensor.detach().numpy().reshape(-1)[:] = draws
            return tensor
        return tensor.copy_(torch.from_numpy(draws).view(tensor.shape))
