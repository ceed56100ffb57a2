"""The secure Gaussian sampler: normal quantiles, secret keys, no repeated draws (its
ziggurat's tails and paths: test_ziggurat.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats

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


def test_no_step_of_the_default_model_repeats_a_draw() -> None:
    """An adversary's view of the released update: two coordinates with the same noise
    reveal the difference of their clipped sums. 2,000 steps of the default model's
    1,890 draws (the polar sampler before the ziggurat repeated some in one step in ~65),
    in float64: a repeat is no accident."""
    sampler = SecureGaussian(ChaChaStream(TEST_KEY))
    step = np.empty(1890)
    for _ in range(2000):
        sampler.normal_into(step, 1.0)
        assert len(np.unique(step)) == len(step)
