"""Canaries from the schema, and the one-run audit on a small synthetic task.

Without noise the audit must find a clearly positive lower bound (the model memorises
the canaries it saw); with DP-SGD at epsilon 3 the bound must stay below epsilon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from privacy.accounting import calibrate_noise
from privacy.empirical import audit_one_run
from training.canaries import audit_scores, draw_canaries, loss_scores, with_canaries
from training.features import ColumnRole, EncodedTable, FeatureSpec, encode_table
from training.model import Mlp, ModelConfig
from training.trainer import (
    DpConfig,
    OptimizerKind,
    TrainConfig,
    plan_steps,
    train_dp,
    train_non_private,
)

WIDTH = 20
COLUMNS = [FeatureSpec(f"x{i}", minimum=0.0, maximum=1.0) for i in range(WIDTH)] + [
    FeatureSpec("y", role=ColumnRole.LABEL, categories=(0, 1))
]
MODEL = ModelConfig(hidden=(128, 128))
DELTA = 1e-5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Small matrices: on a shared machine extra threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(rows: int, rng: np.random.Generator) -> EncodedTable:
    """Real records fill a corner of the declared space; most canaries land elsewhere."""
    features = rng.uniform(0, 0.3, size=(rows, WIDTH))
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(WIDTH)])
    frame["y"] = (features[:, 0] + features[:, 1] > 0.3).astype(int)
    return encode_table(frame, COLUMNS, "y")


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=128,
        learning_rate=0.01,
        optimizer=OptimizerKind.ADAM,
        patience=None,
    )


def test_canaries_follow_the_schema_and_half_are_included() -> None:
    mixed = [
        FeatureSpec("n", minimum=-5.0, maximum=5.0, nullable=True),
        FeatureSpec("c", categories=("a", "b", "c")),
        FeatureSpec("s", role=ColumnRole.SENSITIVE, minimum=0.0, maximum=1.0),
        FeatureSpec("id", role=ColumnRole.IDENTIFIER),
        FeatureSpec("y", role=ColumnRole.LABEL, categories=("no", "yes")),
    ]
    canaries = draw_canaries(mixed, "y", 2000, np.random.default_rng(0))
    table = canaries.table
    assert table.feature_names == ("n", "n__missing", "c=a", "c=b", "c=c")
    assert table.features.min() >= 0 and table.features.max() <= 1
    assert table.features[:, 2:].sum(dim=1).eq(1).all()  # one category each
    assert 0.45 < table.labels.float().mean() < 0.55
    assert 900 < canaries.included.sum() < 1100
    again = draw_canaries(mixed, "y", 2000, np.random.default_rng(0))
    assert np.array_equal(again.included, canaries.included)
    assert again.table.features.equal(table.features)


def test_with_canaries_appends_only_the_included() -> None:
    rng = np.random.default_rng(0)
    train = _task(100, rng)
    canaries = draw_canaries(COLUMNS, "y", 50, rng)
    combined = with_canaries(train, canaries)
    assert len(combined) == 100 + int(canaries.included.sum())
    assert combined.features[100:].equal(canaries.table.features[canaries.included])


def test_loss_scores_are_minus_the_cross_entropy() -> None:
    train = _task(10, np.random.default_rng(0))
    model = Mlp(MODEL, WIDTH)
    scores = loss_scores(model, train)
    logits = model(train.features).detach().double()
    expected = logits.gather(1, train.labels[:, None]).squeeze(1) - logits.logsumexp(dim=1)
    assert np.allclose(scores, expected.numpy(), atol=1e-5)


def test_without_noise_the_audit_finds_a_clearly_positive_bound() -> None:
    rng = np.random.default_rng(0)
    train, val = _task(1000, rng), _task(300, rng)
    canaries = draw_canaries(COLUMNS, "y", 1000, np.random.default_rng(1))
    scores = audit_scores(
        train,
        canaries,
        lambda table: train_non_private(table, val, MODEL, _config(30), progress=False).model,
    )
    audit = audit_one_run(
        scores, canaries.included, positive=100, negative=100, delta=DELTA, confidence=0.95
    )
    assert audit.correct >= 150
    assert audit.epsilon_lower_bound > 0.8


@pytest.mark.slow
def test_with_dp_the_bound_stays_below_epsilon(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train, val = _task(1000, rng), _task(300, rng)
    canaries = draw_canaries(COLUMNS, "y", 1000, np.random.default_rng(1))
    config = _config(5)
    epsilons = []

    def fit(table: EncodedTable) -> Mlp:
        plan = plan_steps(len(table), config.batch_size, config.epochs)
        sigma = calibrate_noise(3.0, DELTA, plan.sample_rate, plan.total_steps)
        result = train_dp(
            table,
            val,
            MODEL,
            config,
            DpConfig(sigma, 1.0, DELTA),
            run_dir=tmp_path,
            reserve_steps=lambda total: None,
            progress=False,
        )
        epsilons.append(result.epsilon)
        return result.model

    scores = audit_scores(train, canaries, fit)
    audit = audit_one_run(
        scores, canaries.included, positive=100, negative=100, delta=DELTA, confidence=0.95
    )
    assert epsilons[0] <= 3.0
    assert audit.epsilon_lower_bound < epsilons[0]
