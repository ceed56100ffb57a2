"""Person-level clipping: each person's rows, summed, clipped once, as the trainer does it.

The reference is independent of the fast engine: per-row gradients from ``torch.func``
(vmap of grad), summed by person, clipped with Opacus' flat rule, then summed.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap
from torch.nn import functional

from privacy.clipping import ClippingEngine
from privacy.sampling import PersonIndex
from training.features import EncodedTable
from training.model import Mlp, ModelConfig
from training.precision import LossScaler, Precision, precision_strategy
from training.private_steps import StepSetup, _person_batches

TOLERANCE = 1e-5
NORM_EPSILON = 1e-6  # Opacus' guard, as in privacy.clipping


def reference_clipped_sum(
    model: torch.nn.Module, table: EncodedTable, people: torch.Tensor, max_grad_norm: float
) -> torch.Tensor:
    """sum over people p of clip(sum over p's rows of the row's gradient), flattened."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def row_loss(p, x, y):
        logits = functional_call(model, p, (x[None],))
        return functional.cross_entropy(logits, y[None])

    grads = vmap(grad(row_loss), in_dims=(None, 0, 0))(params, table.features, table.labels)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1).double()  # rows x P
    codes = torch.unique(people, return_inverse=True)[1]
    per_person = torch.zeros(int(codes.max()) + 1, flat.shape[1], dtype=torch.float64)
    per_person.index_add_(0, codes, flat)
    norms = per_person.norm(dim=1)
    clip = (max_grad_norm / (norms + NORM_EPSILON)).clamp(max=1.0)
    return (per_person * clip[:, None]).sum(0)


def engine_clipped_sum(
    model: torch.nn.Module, table: EncodedTable, max_grad_norm: float
) -> torch.Tensor:
    """The trainer's person path: padded people x rows batch, one engine, no noise."""
    index = PersonIndex.from_codes(table.people)
    setup = _setup(model, table)
    engine = ClippingEngine(model, max_grad_norm=max_grad_norm)
    batch = _person_batches(setup, index)(torch.arange(index.people))
    with engine.capture():
        logits = model(batch.features)
    assert engine.accumulate(batch.unit_losses(logits)) == 0  # no person dropped
    flat = engine.take_flat().double()
    engine.detach()
    return flat


def _setup(model: torch.nn.Module, table: EncodedTable) -> StepSetup:
    return StepSetup(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train=table,
        batch_size=8,
        sample_rate=0.5,
        steps_per_epoch=2,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        accountant="prv",
        strategy=precision_strategy(Precision.FP32, torch.device("cpu")),
        scaler=LossScaler(enabled=False),
        device=torch.device("cpu"),
        max_physical_batch_size=None,
    )


def _table(rows_per_person: list[int], width: int = 6, seed: int = 0, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    people = torch.repeat_interleave(
        torch.arange(len(rows_per_person)) * 7 + 3, torch.tensor(rows_per_person)
    )
    people = people[torch.randperm(len(people), generator=generator)]  # rows interleaved
    rows = len(people)
    return EncodedTable(
        features=torch.randn(rows, width, generator=generator) * scale,
        labels=torch.randint(0, 2, (rows,), generator=generator),
        feature_names=tuple(f"f{i}" for i in range(width)),
        people=people,
    )


@pytest.mark.parametrize("max_grad_norm", [0.05, 1.0, 100.0])  # all / some / no person clipped
def test_per_person_clipped_sum_equals_torch_func_reference(max_grad_norm):
    torch.manual_seed(1)
    model = Mlp(ModelConfig(hidden=(16, 8)), 6)
    table = _table([1, 5, 2, 50, 3, 1, 7])
    got = engine_clipped_sum(model, table, max_grad_norm)
    expected = reference_clipped_sum(model, table, table.people, max_grad_norm)
    assert torch.allclose(got, expected, atol=TOLERANCE, rtol=0)
    # Where anyone is clipped, row-level clipping gives another sum: the test tells them apart.
    by_row = reference_clipped_sum(model, table, torch.arange(len(table)), max_grad_norm)
    assert torch.allclose(by_row, expected, atol=1e3 * TOLERANCE) == (max_grad_norm == 100.0)


def test_a_person_with_50_rows_moves_the_clipped_sum_by_at_most_c():
    max_grad_norm = 1.0
    torch.manual_seed(2)
    model = Mlp(ModelConfig(hidden=(16, 8)), 6)
    others = _table([1, 2, 3, 1, 4], seed=3)
    # The adversary: 50 rows of large, identical features, all pushing the same way.
    heavy = EncodedTable(
        features=torch.full((50, 6), 40.0),
        labels=torch.ones(50, dtype=torch.long),
        feature_names=others.feature_names,
        people=torch.full((50,), 999),
    )
    both = EncodedTable(
        features=torch.cat([others.features, heavy.features]),
        labels=torch.cat([others.labels, heavy.labels]),
        feature_names=others.feature_names,
        people=torch.cat([others.people, heavy.people]),
    )
    with_person = engine_clipped_sum(model, both, max_grad_norm)
    without = engine_clipped_sum(model, others, max_grad_norm)
    moved = float((with_person - without).norm())
    # Clipped to C as one contribution; row-level clipping would have let it move 50 C.
    assert 0.99 * max_grad_norm < moved <= max_grad_norm * (1 + 1e-5)


def test_person_index_groups_every_row_of_a_person():
    codes = torch.tensor([5, 9, 5, 2, 9, 5])
    index = PersonIndex.from_codes(codes)
    assert (index.people, index.max_rows_per_person, index.rows) == (3, 3, 6)
    rows, mask = index.padded(torch.arange(3), pad=-1)
    groups = [sorted(r[m].tolist()) for r, m in zip(rows, mask, strict=True)]
    assert sorted(groups) == [[0, 2, 5], [1, 4], [3]]
    assert (rows[~mask] == -1).all()


def test_replica_shards_split_people_not_rows():
    codes = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 0, 4])
    index = PersonIndex.from_codes(codes)
    shards = [index.shard(rank, 3) for rank in range(3)]
    seen = []
    for shard in shards:
        rows, mask = shard.padded(torch.arange(shard.people), pad=-1)
        for row, m in zip(rows, mask, strict=True):
            persons = set(codes[row[m]].tolist())
            assert len(persons) == 1  # a shard's "person" is exactly one person
            seen.append((persons.pop(), sorted(row[m].tolist())))
    assert sorted(p for p, _ in seen) == [0, 1, 2, 3, 4]  # every person in exactly one shard
    assert sorted(r for _, rows in seen for r in rows) == list(range(10))
