"""The DP trainer: it learns, accounts for every step, reserves before spending."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from privacy.accounting import epsilon_of
from training.checkpoint import load_checkpoint
from training.errors import TrainingInputError
from training.features import EncodedTable
from training.model import Activation, ModelConfig, predict_proba
from training.private_steps import ClippingMode
from training.trainer import (
    DpConfig,
    TrainConfig,
    plan_steps,
    train_dp,
    train_non_private,
)

MODEL = ModelConfig(hidden=(16,))
DP = DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, accountant="rdp")


def table(rows: int, seed: int) -> EncodedTable:
    """A noisy linear problem on [0, 1] features; about 93% is learnable."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 8, generator=generator)
    weights = torch.tensor([3.0, -2.0, 1.5, 0.0, 0.0, 1.0, -1.0, 0.5])
    noise = 0.3 * torch.randn(rows, generator=generator)
    labels = ((features - 0.5) @ weights + noise > 0).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(8)))


TRAIN, VAL = table(2000, 0), table(500, 1)


def accuracy(model: torch.nn.Module, data: EncodedTable) -> float:
    return (predict_proba(model, data.features).argmax(1) == data.labels).float().mean().item()


def config(**changes: object) -> TrainConfig:
    values = {"epochs": 4, "batch_size": 100, "learning_rate": 0.5, "patience": None}
    return TrainConfig(**{**values, **changes})


def run(tmp_path: Path, reserved: list[int] | None = None, **changes: object):
    log = reserved if reserved is not None else []
    return train_dp(
        TRAIN,
        VAL,
        MODEL,
        config(**changes),
        DP,
        run_dir=tmp_path,
        reserve_steps=log.append,
        progress=False,
    )


@pytest.mark.parametrize("clipping", list(ClippingMode))
def test_dp_training_beats_chance_and_non_private_baseline_too(
    tmp_path: Path, clipping: ClippingMode
) -> None:
    reserved: list[int] = []
    result = run(tmp_path, reserved, clipping=clipping)
    baseline = train_non_private(TRAIN, VAL, MODEL, config(), progress=False)

    assert accuracy(result.model, VAL) > 0.8
    assert accuracy(baseline.model, VAL) > 0.8
    assert result.steps == result.accounted_steps == 4 * 20
    assert result.history[0].as_opacus() == (1.0, 0.05, 80)
    assert result.epsilon == pytest.approx(epsilon_of(result.history, DP.delta, DP.accountant))
    assert [r.epsilon for r in result.curve] == sorted(r.epsilon for r in result.curve)
    assert baseline.history == () and baseline.epsilon == float("inf")


def test_reservations_come_in_chunks_within_epochs_and_end_exact(tmp_path: Path) -> None:
    reserved: list[int] = []
    result = run(tmp_path, reserved, reserve_chunk=8)
    # 20 steps an epoch in chunks of 8: 8, 16, 20, then the next epoch.
    assert reserved[:4] == [8, 16, 20, 28]
    assert reserved[-1] == result.accounted_steps == 80


def test_a_refused_reservation_stops_before_any_unreserved_step(tmp_path: Path) -> None:
    reserved: list[int] = []

    def ledger(total: int) -> None:
        if total > 12:
            raise RuntimeError("budget exceeded")
        reserved.append(total)

    with pytest.raises(RuntimeError, match="budget exceeded"):
        train_dp(
            TRAIN,
            VAL,
            MODEL,
            config(reserve_chunk=4, checkpoint_every=1),
            DP,
            run_dir=tmp_path,
            reserve_steps=ledger,
            progress=False,
        )
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint is not None
    assert reserved == [4, 8, 12]
    assert checkpoint.meta["state"]["step"] == 12


def test_resuming_counts_from_the_callers_reservation(tmp_path: Path) -> None:
    reserved: list[int] = []
    result = train_dp(
        TRAIN,
        VAL,
        MODEL,
        config(epochs=1),
        DP,
        run_dir=tmp_path,
        reserve_steps=reserved.append,
        already_reserved=37,
        progress=False,
    )
    assert reserved[0] == 37 + 20
    assert result.steps == 20 and result.accounted_steps == 57


def test_a_finished_run_reruns_to_the_same_result_without_new_steps(tmp_path: Path) -> None:
    first = run(tmp_path, epochs=2)
    reserved: list[int] = []
    again = run(tmp_path, reserved, epochs=2)
    assert reserved == []
    assert again.accounted_steps == first.accounted_steps == 40
    assert again.resumed_from_step == 40
    assert torch.equal(again.model.layers[0].weight, first.model.layers[0].weight)


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    run(tmp_path, epochs=1)
    with pytest.raises(TrainingInputError, match="changed: train.learning_rate"):
        run(tmp_path, epochs=1, learning_rate=0.1)


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    result = run(tmp_path, patience=1, min_delta=10.0)
    assert result.stopped_early and result.epochs == 2 and result.best_epoch == 1
    assert result.accounted_steps == 40


@pytest.mark.parametrize("clipping", [ClippingMode.FAST, ClippingMode.OPACUS_HOOKS])
def test_physical_batches_with_batch_memory_manager(tmp_path: Path, clipping: ClippingMode) -> None:
    result = run(tmp_path, epochs=1, max_physical_batch_size=16, clipping=clipping)
    assert result.steps == result.accounted_steps == 20


def test_adam_and_other_activations(tmp_path: Path) -> None:
    result = train_dp(
        TRAIN,
        VAL,
        ModelConfig(hidden=(16, 8), activation=Activation.TANH, dropout=0.1),
        config(epochs=2, optimizer="adam", learning_rate=0.05),
        DP,
        run_dir=tmp_path,
        reserve_steps=lambda total: None,
        progress=False,
    )
    assert accuracy(result.model, VAL) > 0.8


@pytest.mark.parametrize(("rows", "batch_size"), [(2000, 100), (1000, 333), (49, 1), (10, 64)])
def test_plan_matches_opacus_sampling(rows: int, batch_size: int) -> None:
    plan = plan_steps(rows, batch_size, epochs=3)
    data = TensorDataset(torch.zeros(rows, 1))
    loader = DPDataLoader.from_data_loader(DataLoader(data, batch_size=batch_size))
    assert (plan.sample_rate, plan.steps_per_epoch) == (loader.sample_rate, len(loader))
    assert plan.total_steps == 3 * len(loader)


def test_config_errors_are_gathered() -> None:
    with pytest.raises(TrainingInputError) as error:
        TrainConfig(epochs=0, learning_rate=-1, optimizer="rmsprop", precision="fp8")
    message = str(error.value)
    for part in ("epochs", "learning_rate", "unknown optimizer 'rmsprop'", "unknown precision"):
        assert part in message


def test_gdp_and_zero_noise_are_refused() -> None:
    with pytest.raises(TrainingInputError, match="refused") as error:
        DpConfig(noise_multiplier=0.0, max_grad_norm=1.0, delta=1e-5, accountant="gdp")
    assert "zero noise is not DP" in str(error.value)


def test_mismatched_splits_are_refused(tmp_path: Path) -> None:
    other = EncodedTable(VAL.features, VAL.labels, tuple(f"g{i}" for i in range(8)))
    with pytest.raises(TrainingInputError, match="different feature layouts"):
        train_dp(
            TRAIN,
            other,
            MODEL,
            config(),
            DP,
            run_dir=tmp_path,
            reserve_steps=lambda total: None,
            progress=False,
        )
