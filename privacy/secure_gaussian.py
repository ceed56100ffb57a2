"""Gaussian draws from a cryptographically secure stream, in float64, with real tails.

DP-SGD's guarantee assumes the noise is Gaussian and unpredictable. torch's samplers are
neither quite: its generators are not CSPRNGs (whoever learns the state replays the
noise) and its float32 normal sampler has no draw beyond ~5.8 sigma in 4e9, where a true
Gaussian has 32. This module draws instead:

- 64-bit words from ChaCha20 (``cryptography``'s, i.e. OpenSSL's) keyed from the
  operating system's CSPRNG (``os.urandom``); the key is replaced by fresh keystream
  output every 2^32 bytes (fast key erasure: a later state does not reveal earlier
  output), far below the 2^38 bytes at which ChaCha20's 32-bit block counter would wrap;
- normals by the 256-layer ziggurat in float64 (:mod:`privacy.ziggurat`): exact, about
  1.02 words a draw, tails to ~12.2 sigma.

A fixed ``key`` gives a reproducible stream, for tests only: the production path never
takes one.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privacy.errors import PrivacyError, PrivacyInputError
from privacy.ziggurat import fill_normals

__all__ = ["ChaChaStream", "SecureGaussian"]

_KEY_BYTES = 32
_NONCE_BYTES = 16
# Re-key after this many bytes of keystream (the block counter wraps at 2^38 bytes).
_REKEY_AFTER = 2**32


class ChaChaStream:
    """A ChaCha20 keystream: ``key`` (32 bytes, tests only) or one from ``os.urandom``."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) != _KEY_BYTES):
            raise PrivacyInputError(f"a ChaCha20 key is {_KEY_BYTES} bytes")
        self._zeros = bytearray()
        self._rekey(os.urandom(_KEY_BYTES) if key is None else key)

    def _rekey(self, key: bytes) -> None:
        # A fresh key each time: the nonce can stay zero (counter starts at 0).
        cipher = Cipher(algorithms.ChaCha20(key, bytes(_NONCE_BYTES)), mode=None)
        self._encryptor = cipher.encryptor()
        self._used = 0

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of keystream."""
        out = bytearray(size)
        self.read_into(memoryview(out))
        return bytes(out)

    def read_into(self, out: memoryview) -> None:
        """Overwrite ``out`` (a writable byte view) with the next bytes of keystream."""
        size = out.nbytes
        if self._used + size > _REKEY_AFTER:
            self._rekey(self._encryptor.update(bytes(_KEY_BYTES)))
        self._used += size
        if len(self._zeros) < size:
            self._zeros = bytearray(size)
        self._encryptor.update_into(memoryview(self._zeros)[:size], out)


class SecureGaussian:
    """Normal draws, float64, from a :class:`ChaChaStream` (one kept word buffer: one
    draw per training step, of one size)."""

    def __init__(self, stream: ChaChaStream | None = None) -> None:
        self._stream = stream if stream is not None else ChaChaStream()
        self._words = np.empty(0, dtype=np.uint64)

    def standard_normal(self, count: int) -> np.ndarray:
        """``count`` independent N(0, 1) draws (float64, a new array)."""
        if not isinstance(count, int) or count < 0:
            raise PrivacyInputError(f"count must be an integer >= 0, got {count!r}")
        out = np.empty(count)
        self.normal_into(out, 1.0)
        return out

    def normal_into(self, out: np.ndarray, std: float) -> None:
        """Overwrite ``out`` (1-D, float64 or float32) with independent N(0, ``std``^2)
        draws: computed in float64, ``std`` included, and rounded once to ``out``'s dtype."""
        if out.ndim != 1 or out.dtype not in (np.float64, np.float32):
            raise PrivacyInputError(f"expected a 1-D float array, got {out.dtype} {out.shape}")
        if len(out) == 0:
            return
        # A draw takes one word, and a few more for the ~1% that leave the ziggurat's
        # fast path (1.02 on average): 1/16 more plus 64 runs short with a probability
        # below 1e-20 for one draw and far below for more; the draw then fails closed.
        budget = len(out) + len(out) // 16 + 64
        if len(self._words) < budget:
            self._words = np.empty(budget, dtype=np.uint64)
        words = self._words[:budget]
        self._stream.read_into(memoryview(words).cast("B"))
        if fill_normals(out, std, words) < 0:
            raise PrivacyError("the Gaussian sampler ran out of keystream words")
