"""The white-box one-run audit: gradient canaries in the clipped sum of a real DP run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from privacy.accounting import AccountantKind, calibrate_noise
from privacy.empirical import audit_one_run
from privacy.noise import GaussianNoise
from training.canaries import GradientCanaries
from training.errors import TrainingInputError
from training.features import EncodedTable
from training.model import Mlp, ModelConfig
from training.private_steps import ClippingMode
from training.trainer import DpConfig, TrainConfig, plan_steps, train_dp

EPSILON, DELTA = 3.0, 1e-6
CANARIES, GUESSES = 5000, 100


def table(rows: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 20, generator=generator)
    labels = (features[:, 0] > features[:, 1]).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(20)))


def audit(canaries: GradientCanaries, sigma: float, guesses: int = GUESSES):
    return audit_one_run(
        canaries.scores(sigma),
        canaries.included,
        positive=guesses,
        negative=guesses,
        delta=DELTA,
        confidence=0.95,
    )


@pytest.mark.slow
def test_white_box_bound_is_a_quarter_of_epsilon_or_more_and_never_above_it(
    tmp_path: Path,
) -> None:
    """A pipeline-like shape (the defaults before tuning): q ~ 1/56, ~450 steps, epsilon 3
    at delta 1e-6; the tuned defaults are audited by the pipeline itself."""
    train = table(2000, 0)
    config = TrainConfig(epochs=8, batch_size=36, learning_rate=0.05, patience=None)
    plan = plan_steps(len(train), config.batch_size, config.epochs)
    sigma = calibrate_noise(EPSILON, DELTA, plan.sample_rate, plan.total_steps, AccountantKind.PRV)
    model = ModelConfig(hidden=(64, 64))
    parameters = sum(p.numel() for p in Mlp(model, 20).parameters())  # 5,634
    canaries = GradientCanaries.draw(CANARIES, parameters, np.random.default_rng(0))
    result = train_dp(
        train,
        table(200, 1),
        model,
        config,
        DpConfig(noise_multiplier=sigma, max_grad_norm=1.0, delta=DELTA, accountant="prv"),
        run_dir=tmp_path,
        reserve_steps=lambda total: None,
        progress=False,
        canaries=canaries,
    )
    assert canaries.steps == result.accounted_steps == plan.total_steps
    outcome = audit(canaries, sigma)
    assert 0.25 * result.epsilon <= outcome.epsilon_lower_bound <= result.epsilon


def test_the_audit_catches_a_mechanism_with_too_little_noise() -> None:
    """Canaries under a third of the accounted noise: the bound exceeds the epsilon."""
    sigma = calibrate_noise(EPSILON, DELTA, 1 / 56, 448, AccountantKind.PRV)
    canaries = GradientCanaries.draw(2000, 2000, np.random.default_rng(1))
    weak = canaries.noise(GaussianNoise(sigma / 3), 1 / 56, 1.0)
    buffer = torch.empty(2000)
    for _ in range(448):
        weak.fill(buffer)
    assert audit(canaries, sigma / 3).epsilon_lower_bound > EPSILON


def test_canaries_need_the_fast_engine_and_distinct_coordinates(tmp_path: Path) -> None:
    canaries = GradientCanaries.draw(10, 100, np.random.default_rng(0))
    with pytest.raises(TrainingInputError, match="need clipping fast"):
        train_dp(
            table(100, 0),
            table(50, 1),
            ModelConfig(hidden=(8,)),
            TrainConfig(epochs=1, batch_size=10, clipping=ClippingMode.OPACUS_HOOKS),
            DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, accountant="rdp"),
            run_dir=tmp_path,
            reserve_steps=lambda total: None,
            progress=False,
            canaries=canaries,
        )
    with pytest.raises(TrainingInputError, match="distinct"):
        GradientCanaries(np.array([1, 1]), np.array([True, False]))
    with pytest.raises(TrainingInputError, match="parameters"):
        GradientCanaries.draw(101, 100, np.random.default_rng(0))
