"""Person-level DP-SGD end to end in the trainer: sampling, accounting and refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import dp_accounting
import pytest
import torch
from dp_accounting.pld import PLDAccountant

from privacy.unit import PrivacyUnit, group_privacy
from training.errors import TrainingInputError
from training.features import EncodedTable
from training.model import ModelConfig, predict_proba
from training.private_steps import ClippingMode
from training.trainer import DpConfig, TrainConfig, person_index, plan_steps, train_dp

MODEL = ModelConfig(hidden=(16,))
DELTA = 1e-4


def table(people: int, seed: int, unit_rows: int = 4) -> EncodedTable:
    """A learnable problem in which person p has 1 + p % unit_rows rows."""
    generator = torch.Generator().manual_seed(seed)
    owners = torch.repeat_interleave(torch.arange(people), 1 + torch.arange(people) % unit_rows)
    features = torch.rand(len(owners), 8, generator=generator)
    weights = torch.tensor([3.0, -2.0, 1.5, 0.0, 0.0, 1.0, -1.0, 0.5])
    labels = ((features - 0.5) @ weights > 0).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(8)), people=owners * 3)


TRAIN, VAL = table(400, 0), table(100, 1)
PERSON = DpConfig(1.0, 1.0, DELTA, accountant="prv", unit=PrivacyUnit.PERSON)


def _train(tmp_path: Path, dp: DpConfig = PERSON, train: EncodedTable = TRAIN, **changes):
    values = {"epochs": 3, "batch_size": 40, "learning_rate": 0.5, "patience": None}
    reserved: list[int] = []
    result = train_dp(
        train, VAL, MODEL, TrainConfig(**{**values, **changes}), dp,
        run_dir=tmp_path, reserve_steps=reserved.append, progress=False,
    )  # fmt: skip
    return result, reserved


def _pld_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant = PLDAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(step, steps))
    return accountant.get_epsilon(delta)


def test_person_level_training_samples_people_and_dp_accounting_pld_agrees(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    result, _ = _train(tmp_path)
    people = person_index(TRAIN, PrivacyUnit.PERSON).people
    assert people == 400 and len(TRAIN) == 1000
    # The sample rate is over people (40 expected of 400), not over the 1000 rows.
    assert result.sample_rate == plan_steps(people, 40, 3).sample_rate == 0.1
    assert result.accounted_steps == 30
    reference = _pld_epsilon(1.0, result.sample_rate, result.accounted_steps, DELTA)
    assert reference <= result.epsilon <= 1.02 * reference
    accuracy = (predict_proba(result.model, VAL.features).argmax(1) == VAL.labels).float()
    assert accuracy.mean() > 0.7


def test_person_level_needs_every_rows_person(tmp_path: Path) -> None:
    anonymous = EncodedTable(TRAIN.features, TRAIN.labels, TRAIN.feature_names)
    with pytest.raises(TrainingInputError, match="identifier"):
        _train(tmp_path, train=anonymous)
    missing = TRAIN.people.clone()
    missing[5] = -1
    gap = EncodedTable(TRAIN.features, TRAIN.labels, TRAIN.feature_names, people=missing)
    with pytest.raises(TrainingInputError, match="1 missing"):
        _train(tmp_path, train=gap)


@pytest.mark.parametrize("clipping", [ClippingMode.OPACUS_HOOKS, ClippingMode.OPACUS_GHOST])
def test_opacus_engines_are_refused_at_person_level(tmp_path: Path, clipping) -> None:
    with pytest.raises(TrainingInputError, match="person runs with train.clipping fast only"):
        _train(tmp_path, clipping=clipping, precision="fp32")


def test_group_privacy_conversion_matches_the_issue_figures() -> None:
    # Issue 19: epsilon 2.67 at delta 1e-6 gives a person with 5 rows about 13.3 and 0.22.
    group = group_privacy(2.67, 1e-6, 5)
    assert group.epsilon == pytest.approx(13.35)
    assert group.delta == pytest.approx(5 * 2.718281828 ** (4 * 2.67) * 1e-6, rel=1e-6)
    assert 0.2 < group.delta < 0.23
    assert group_privacy(2.67, 1e-6, 1).delta == pytest.approx(1e-6)
    assert group_privacy(5.0, 1e-6, 10).delta == 1.0  # capped: no guarantee left
