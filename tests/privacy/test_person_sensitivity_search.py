"""An adversary searches for one *person* whose rows, together, add more than C to the sum.

A person's rows reach the fast engine as one "sequence" (training.private_steps), so its
norm is a sum of outer products over rows, exactly where a squared-norm shortcut can
cancel. The attacker controls the rows' features and labels: pairs of identical rows with
opposite labels (their gradients nearly cancel while each is huge), a remainder row at
another scale, at feature scales up to 1e6, in fp32 and under bf16 autocast. The
contribution is what the engine adds for that one person, normed in float64; the claim
is ``norm <= C (1 + 1e-6)``. The same rows clipped one by one (record level) add up to
several C, which shows the search reaches contributions that a row-level bound misses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy.clipping import ClippingEngine
from privacy.sampling import PersonIndex
from training.features import EncodedTable
from training.model import Mlp, ModelConfig
from training.precision import LossScaler, Precision, precision_strategy
from training.private_steps import StepSetup, _person_batches

C = 1.0
TOLERANCE = 1e-6
WIDTH = 6


def _person(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rows = int(rng.integers(2, 12))
    scale = 10.0 ** rng.uniform(0, 6)
    common = rng.normal(size=WIDTH)
    jitter = 10.0 ** rng.uniform(-7, 0)
    features = scale * (common + jitter * rng.normal(size=(rows, WIDTH)))
    labels = np.arange(rows) % 2  # identical rows, opposite labels: gradients cancel
    if rows % 2:  # the unmatched row at its own scale sets what survives the cancellation
        features[-1] = rng.normal(size=WIDTH) * 10.0 ** rng.uniform(-2, 3)
    if rng.random() < 0.25:  # or every row pushing the same way
        labels[:] = 1
    return torch.tensor(features, dtype=torch.float32), torch.tensor(labels)


def _contribution(model: Mlp, features, labels, people, *, autocast: bool) -> float:
    """The norm of what the engine adds for ``people`` (codes per row), no noise."""
    table = EncodedTable(features, labels, tuple(f"f{i}" for i in range(WIDTH)), people)
    index = PersonIndex.from_codes(people)
    setup = StepSetup(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train=table,
        batch_size=1, sample_rate=1.0, steps_per_epoch=1, noise_multiplier=1.0,
        max_grad_norm=C, accountant="prv",
        strategy=precision_strategy(Precision.FP32, torch.device("cpu")),
        scaler=LossScaler(enabled=False), device=torch.device("cpu"),
        max_physical_batch_size=None,
    )  # fmt: skip
    engine = ClippingEngine(model, max_grad_norm=C)
    batch = _person_batches(setup, index)(torch.arange(index.people))
    with engine.capture(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(batch.features)
    engine.accumulate(batch.unit_losses(logits))
    flat = engine.take_flat().double()
    engine.detach()
    return float(flat.norm())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_no_person_adds_more_than_c_whatever_their_rows(autocast: bool) -> None:
    rng = np.random.default_rng(19)
    torch.manual_seed(19)
    model = Mlp(ModelConfig(hidden=(16, 8)), WIDTH)
    worst, beyond_row_level = 0.0, 0.0
    for _ in range(120):
        features, labels = _person(rng)
        one_person = torch.zeros(len(labels), dtype=torch.long)
        worst = max(worst, _contribution(model, features, labels, one_person, autocast=autocast))
        each_row = torch.arange(len(labels))
        beyond_row_level = max(
            beyond_row_level, _contribution(model, features, labels, each_row, autocast=autocast)
        )
    assert worst <= C * (1 + TOLERANCE)
    assert worst > 0.9 * C  # the search does reach the bound
    assert beyond_row_level > 3 * C  # row-level clipping lets the same person add several C
