"""Gaussian draws from a cryptographically secure stream, in float64, with real tails.

DP-SGD's guarantee assumes the noise is Gaussian and unpredictable. torch's samplers are
neither quite: its generators are not CSPRNGs (whoever learns the state replays the
noise) and its float32 normal sampler has no draw beyond ~5.8 sigma in 4e9, where a true
Gaussian has 32. This module draws instead:

- bytes from ChaCha20 (``cryptography``'s, i.e. OpenSSL's) keyed from the operating
  system's CSPRNG (``os.urandom``); the key is replaced by fresh keystream output every
  2^32 bytes (fast key erasure: a later state does not reveal earlier output), far below
  the 2^38 bytes at which ChaCha20's 32-bit block counter would wrap;
- uniforms with 53 random bits (the float64 mantissa) from 64-bit words;
- normals by Marsaglia's polar method in float64: no trigonometry, ~1.27 uniforms per
  normal, and a pair of 53-bit uniforms reaches sqrt(-2 ln 2^-104) ~ 12 sigma, so the
  tails are there to well beyond 8 sigma.

A fixed ``key`` gives a reproducible stream, for tests only: the production path never
takes one.
"""

from __future__ import annotations

import math
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from privacy.errors import PrivacyInputError

__all__ = ["ChaChaStream", "SecureGaussian"]

_KEY_BYTES = 32
_NONCE_BYTES = 16
# Re-key after this many bytes of keystream (the block counter wraps at 2^38 bytes).
_REKEY_AFTER = 2**32
# Polar method: a pair is accepted with probability pi / 4.
_ACCEPT = math.pi / 4


class ChaChaStream:
    """A ChaCha20 keystream: ``key`` (32 bytes, tests only) or one from ``os.urandom``."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and (not isinstance(key, bytes) or len(key) != _KEY_BYTES):
            raise PrivacyInputError(f"a ChaCha20 key is {_KEY_BYTES} bytes")
        self._rekey(os.urandom(_KEY_BYTES) if key is None else key)

    def _rekey(self, key: bytes) -> None:
        # A fresh key each time: the nonce can stay zero (counter starts at 0).
        cipher = Cipher(algorithms.ChaCha20(key, bytes(_NONCE_BYTES)), mode=None)
        self._encryptor = cipher.encryptor()
        self._used = 0

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes of keystream."""
        if self._used + size > _REKEY_AFTER:
            self._rekey(self._encryptor.update(bytes(_KEY_BYTES)))
        self._used += size
        return self._encryptor.update(bytes(size))

    def uniforms(self, count: int) -> np.ndarray:
        """``count`` float64 uniforms on [0, 1), each with 53 random bits."""
        words = np.frombuffer(self.read(8 * count), dtype=np.uint64)
        uniforms = (words >> np.uint64(11)).astype(np.float64)
        uniforms *= 2.0**-53
        return uniforms


class SecureGaussian:
    """Standard normal float64 draws from a :class:`ChaChaStream`."""

    def __init__(self, stream: ChaChaStream | None = None) -> None:
        self._stream = stream if stream is not None else ChaChaStream()

    def standard_normal(self, count: int) -> np.ndarray:
        """``count`` independent N(0, 1) draws (float64)."""
        if not isinstance(count, int) or count < 0:
            raise PrivacyInputError(f"count must be an integer >= 0, got {count!r}")
        chunks, have = [], 0
        while have < count:
            pairs = int((count - have) / 2 / _ACCEPT * 1.02) + 16
            u = self._stream.uniforms(2 * pairs).reshape(2, pairs)
            u *= 2.0
            u -= 1.0  # uniform on [-1, 1), steps of 2^-52
            s = u[0] * u[0]
            s += u[1] * u[1]
            keep = np.flatnonzero((s < 1.0) & (s > 0.0))  # the pairs inside the unit disk
            s = s[keep]
            factor = np.log(s)
            factor *= -2.0
            factor /= s
            np.sqrt(factor, out=factor)
            pair = u[:, keep]
            pair *= factor
            chunks.append(pair.reshape(-1))
            have += pair.size
        if len(chunks) == 1:
            return chunks[0][:count]
        return np.concatenate(chunks)[:count] if chunks else np.empty(0)
