"""The secure Gaussian sampler: normal quantiles, real tails, 53-bit uniforms, secret keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import integrate, stats

from privacy.errors import PrivacyInputError
from privacy.noise import GaussianNoise
from privacy.secure_gaussian import ChaChaStream, SecureGaussian

TEST_KEY = bytes(range(32))  # a fixed key: reproducible streams, tests only


def test_draws_pass_kolmogorov_smirnov_and_chi_square_against_the_normal() -> None:
    draws = SecureGaussian(ChaChaStream(TEST_KEY)).standard_normal(200_000)
    assert draws.dtype == np.float64 and draws.shape == (200_000,)
    assert stats.kstest(draws, "norm").pvalue > 1e-3
    edges = stats.norm.ppf(np.linspace(0, 1, 51))  # 50 equiprobable cells
    observed = np.histogram(draws, bins=edges)[0]
    assert stats.chisquare(observed).pvalue > 1e-3
    quantiles = np.quantile(draws, [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
    expected = stats.norm.ppf([0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
    assert np.abs(quantiles - expected).max() < 0.05


def test_four_sigma_draws_occur_at_the_normal_rate() -> None:
    draws = SecureGaussian(ChaChaStream(TEST_KEY)).standard_normal(2_000_000)
    beyond = int(np.sum(np.abs(draws) > 4.0))
    expected = 2_000_000 * 2 * stats.norm.sf(4.0)  # about 127
    assert abs(beyond - expected) < 5 * math.sqrt(expected)


class _CentreOfTheDisk(ChaChaStream):
    """Uniform pairs conditioned on the disk of radius ``radius`` about (0, 0): where the
    polar method makes its tails. The polar method needs (u, v) uniform in the unit disk;
    given the small disk, s / radius^2 is uniform, so P(R > r) = exp(-r^2 / 2) / radius^2."""

    def __init__(self, radius: float) -> None:
        super().__init__(TEST_KEY)
        self.radius = radius

    def uniforms_into(self, out: np.ndarray, scratch: np.ndarray) -> None:
        plain = (self.uniforms(len(out)).reshape(2, -1) + 1) / 2
        r, theta = self.radius * np.sqrt(plain[0]), 2 * np.pi * plain[1]
        out[:] = np.concatenate([r * np.cos(theta), r * np.sin(theta)])

    def uniforms(self, count: int) -> np.ndarray:
        out = np.empty(count)
        super().uniforms_into(out, np.empty(count, dtype=np.int64))
        return out


def _tail_given_disk(t: float, radius: float) -> float:
    """P(|Z| > t | (u, v) in the disk), Z = R cos(theta): R's tail averaged over theta."""

    def inner(theta: float) -> float:
        c = abs(math.cos(theta))
        return 0.0 if c == 0 else min(1.0, math.exp(-(t * t) / (2 * c * c)) / radius**2)

    return integrate.quad(inner, 0, math.pi, limit=200, points=[math.pi / 2])[0] / math.pi


@pytest.mark.parametrize("t", [6.5, 7.0, 8.0])
def test_tails_beyond_six_sigma_by_importance_sampling(t: float) -> None:
    """P(|Z| > t) = P(s < radius^2) P(|Z| > t | disk); the first factor is the area of
    the disk (exact), the second is measured on 400,000 draws inside it."""
    radius = math.exp(-((t - 0.3) ** 2) / 4)  # inside, R > sqrt(-4 ln radius) = t - 0.3
    draws = SecureGaussian(_CentreOfTheDisk(radius)).standard_normal(400_000)
    conditional = _tail_given_disk(t, radius)
    beyond = int(np.sum(np.abs(draws) > t))
    expected = len(draws) * conditional
    assert expected > 50
    assert abs(beyond - expected) < 5 * math.sqrt(expected)
    # The same tail, unconditionally, against the normal's: the importance weight is the
    # probability that a pair lands in the disk (pi r^2 / 4 of the square, over pi / 4).
    assert radius**2 * conditional == pytest.approx(2 * stats.norm.sf(t), rel=1e-6)


def test_the_largest_draws_reach_beyond_eight_sigma() -> None:
    """No cutoff below 8 sigma: pairs nearest the centre give draws up to ~12 sigma."""
    draws = SecureGaussian(_CentreOfTheDisk(1e-9)).standard_normal(10_000)
    assert np.abs(draws).max() > 8.5 and np.isfinite(draws).all()


def test_uniforms_carry_53_random_bits() -> None:
    """Uniform over the odd multiples of 2^-53 in (-1, 1): 2^53 equally likely points."""
    uniforms = ChaChaStream(TEST_KEY).uniforms(200_000)
    assert uniforms.min() > -1 and uniforms.max() < 1 and np.all(uniforms != 0)
    grid = uniforms * 2.0**53  # exact: odd integers of magnitude below 2^53
    assert np.array_equal(np.round(grid), grid) and np.all(np.abs(grid) % 2 == 1)
    steps = (np.abs(grid).astype(np.int64) - 1) // 2  # k in [0, 2^52)
    assert 0.49 < float(np.mean(steps & 1)) < 0.51  # the lowest random bit varies
    assert 0.49 < float(np.mean(uniforms > 0)) < 0.51  # and so does the sign
    assert stats.kstest((uniforms + 1) / 2, "uniform").pvalue > 1e-3


def test_fixed_keys_reproduce_and_the_default_key_is_fresh() -> None:
    first = SecureGaussian(ChaChaStream(TEST_KEY)).standard_normal(1000)
    again = SecureGaussian(ChaChaStream(TEST_KEY)).standard_normal(1000)
    assert np.array_equal(first, again)
    assert not np.array_equal(
        SecureGaussian().standard_normal(1000), SecureGaussian().standard_normal(1000)
    )
    with pytest.raises(PrivacyInputError, match="32 bytes"):
        ChaChaStream(b"short")


def test_the_stream_is_chacha20_and_rekeys_before_its_block_counter_wraps(monkeypatch) -> None:
    single_key = Cipher(algorithms.ChaCha20(TEST_KEY, bytes(16)), mode=None).encryptor()
    reference = single_key.update(bytes(8000))
    monkeypatch.setattr("privacy.secure_gaussian._REKEY_AFTER", 4096)
    stream = ChaChaStream(TEST_KEY)
    assert stream.read(4000) == reference[:4000]
    # Past the limit the key changes: the output departs from the single-key stream.
    assert stream.read(4000) != reference[4000:]


def test_noise_fills_in_place_with_the_std() -> None:
    noise = GaussianNoise(2.5, SecureGaussian(ChaChaStream(TEST_KEY)))
    tensor = torch.empty(100_000)
    assert noise.fill(tensor) is tensor
    assert tensor.dtype == torch.float32
    assert abs(float(tensor.std()) - 2.5) < 0.03 and abs(float(tensor.mean())) < 0.03
    with pytest.raises(PrivacyInputError, match="std"):
        GaussianNoise(-1.0)


def test_draws_into_float32_are_the_float64_draws_scaled_and_rounded_once() -> None:
    """The noise path: std applied in float64, one rounding to the tensor's dtype."""
    exact = SecureGaussian(ChaChaStream(TEST_KEY)).standard_normal(50_000) * 2.5
    into = np.empty(50_000, dtype=np.float32)
    SecureGaussian(ChaChaStream(TEST_KEY)).normal_into(into, 2.5)
    # float64 products may differ in their last bit (std folded in earlier), no more.
    assert np.allclose(into, exact.astype(np.float32), rtol=2**-23, atol=0)
    with pytest.raises(PrivacyInputError, match="1-D float array"):
        SecureGaussian().normal_into(np.empty(4, dtype=np.float16), 1.0)


class _FirstPassMostlyOutside(ChaChaStream):
    """Real uniforms, except that the first call puts all but 10 pairs outside the unit
    disk: the sampler must take a second, smaller pass for the rest of its draws."""

    def __init__(self) -> None:
        super().__init__(TEST_KEY)
        self.calls = 0

    def uniforms_into(self, out: np.ndarray, scratch: np.ndarray) -> None:
        super().uniforms_into(out, scratch)
        self.calls += 1
        if self.calls == 1:
            pairs = out.reshape(2, -1)
            pairs[:, 10:] = np.copysign(0.9, pairs[:, 10:])


def test_a_second_pass_draws_fresh_uniforms() -> None:
    """Every pass after the first reads the uniforms it asked for, not the last pass's
    again: with stale uniforms the 20 draws of the first pass would repeat."""
    stream = _FirstPassMostlyOutside()
    draws = SecureGaussian(stream).standard_normal(2000)
    assert stream.calls >= 2
    assert len(np.unique(draws)) == len(draws)
    assert stats.kstest(draws, "norm").pvalue > 1e-3


def test_no_step_of_the_default_model_repeats_a_draw() -> None:
    """An adversary's view of the released update: two coordinates with the same noise
    reveal the difference of their clipped sums. 2,000 steps of the default model's
    1,890 draws (one in ~65 needs a second pass), in float64: a repeat is no accident."""
    sampler = SecureGaussian(ChaChaStream(TEST_KEY))
    step = np.empty(1890)
    for _ in range(2000):
        sampler.normal_into(step, 1.0)
        assert len(np.unique(step)) == len(step)
