"""Gaussian draws from a cryptographically secure stream, in float64, with real tails.

DP-SGD's guarantee assumes the noise is Gaussian and unpredictable. torch's samplers are
neither quite: its generators are not CSPRNGs (whoever learns the state replays the
noise) and its float32 normal sampler has no draw beyond ~5.8 sigma in 4e9, where a true
Gaussian has 32. This module draws instead:

- bytes from ChaCha20 (``cryptography``'s, i.e. OpenSSL's) keyed from the operating
  system's CSPRNG (``os.urandom``); the key is replaced by fresh keystream output every
  2^32 bytes (fast key erasure: a later state does not reveal earlier output), far below
  the 2^38 bytes at which ChaCha20's 32-bit block counter would wrap;
- uniforms on (-1, 1) with 53 random bits from 64-bit words;
- normals by Marsaglia's polar method in float64: no trigonometry, ~1.27 uniforms per
  normal, and a pair of uniforms on a 2^-52 grid reaches s ~ 2^-105, i.e.
  sqrt(-2 ln s) ~ 12 sigma, so the tails are there to well beyond 8 sigma.

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

    def uniforms(self, count: int) -> np.ndarray:
        """``count`` float64 uniforms on (-1, 1), each with 53 random bits."""
        out = np.empty(count, dtype=np.float64)
        self.uniforms_into(out, np.empty(count, dtype=np.int64))
        return out

    def uniforms_into(self, out: np.ndarray, scratch: np.ndarray) -> None:
        """Fill ``out`` (float64) with uniforms on (-1, 1), each with 53 random bits:
        uniform over the 2^53 points (2k + 1) 2^-53, symmetric about 0 (0 excluded).
        ``scratch`` is an int64 array as long, overwritten.

        A random int64 shifted right by 11 (arithmetic: the sign is kept) is uniform
        on the integers k in [-2^52, 2^52); ``k 2^-52 + 2^-53`` is exact in float64.
        (numpy converts int64 to float64 in the multiply's loop, unlike uint64.)
        """
        self.read_into(memoryview(scratch).cast("B"))
        np.right_shift(scratch, 11, out=scratch)
        np.multiply(scratch, 2.0**-52, out=out)
        np.add(out, 2.0**-53, out=out)


class SecureGaussian:
    """Normal draws, float64, from a :class:`ChaChaStream`.

    Work buffers are kept between calls (one draw per training step, of one size) and
    every pass writes into them: a temporary of this size per pass would be a fresh
    allocation each step, and glibc hands memory that large back to the system when it is
    freed, so each pass paid its page faults again (a fresh process drew 82,946 normals in
    ~1.0 ms that way, 0.42 ms without).
    """

    def __init__(self, stream: ChaChaStream | None = None) -> None:
        self._stream = stream if stream is not None else ChaChaStream()
        self._pairs = 0
        self._u = np.empty(0)
        self._words = np.empty(0, dtype=np.int64)
        self._inside = np.empty(0, dtype=bool)

    def _uniform_pairs(self, pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fresh uniforms for ``pairs`` pairs (2, pairs), with the spent words they came
        from (2 * pairs) and a mask buffer: views of the kept buffers, sliced from the front
        of flat ones so that each is contiguous (a reshape of a strided slice is a copy:
        the uniforms would go into the copy, and a second pass would read the first
        pass's again)."""
        if pairs > self._pairs:
            self._pairs = pairs
            self._u = np.empty(2 * pairs)
            self._words = np.empty(2 * pairs, dtype=np.int64)
            self._inside = np.empty(pairs, dtype=bool)
        u = self._u[: 2 * pairs]
        self._stream.uniforms_into(u, self._words[: 2 * pairs])
        return u.reshape(2, pairs), self._words[: 2 * pairs], self._inside[:pairs]

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
        count, have = len(out), 0
        while have < count:
            pairs = int((count - have) / 2 / _ACCEPT * 1.02) + 16
            u, words, inside = self._uniform_pairs(pairs)
            # The words are spent: their memory holds s and the polar factor.
            s, factor = words.view(np.float64).reshape(2, pairs)
            np.multiply(u[0], u[0], out=s)
            np.multiply(u[1], u[1], out=factor)
            s += factor  # never 0: no coordinate is
            keep = np.flatnonzero(np.less(s, 1.0, out=inside))
            # std sqrt(-2 ln s / s) for every pair; only those inside the disk (s < 1) are
            # kept, so the NaN of the others (a negative root) is never read.
            with np.errstate(invalid="ignore"):
                np.log(s, out=factor)
                factor *= -2.0 * std * std
                factor /= s
                np.sqrt(factor, out=factor)
            u *= factor
            take = min(len(keep), (count - have + 1) // 2)
            rest = min(take, count - have - take)
            # Gathered in float64 into the spent s and factor, then rounded once to out.
            first, second = s[:take], factor[:rest]
            np.take(u[0], keep[:take], out=first)
            np.take(u[1], keep[:rest], out=second)
            np.copyto(out[have : have + take], first, casting="same_kind")
            np.copyto(out[have + take : have + take + rest], second, casting="same_kind")
            have += take + rest
