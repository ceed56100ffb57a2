"""Poisson sampling over in-memory rows, vectorised: one draw and one gather per step.

Each row joins a step's batch independently with probability ``sample_rate``, the same
distribution as Opacus' ``UniformWithReplacementSampler`` (``torch.rand(n) < q``), and an
epoch is ``int(1 / sample_rate)`` steps, so the accountants' subsampled-Gaussian analysis
applies unchanged. Batches may be empty; the caller must still take (and count) the step.

Instead of one uniform per row, the sampler draws the gaps between selected rows: in a
Bernoulli(q) process they are independent Geometric(q) variables, so about ``n q`` draws
(in float64, by inversion) give the same distribution as ``n`` coin flips. At 50,000 rows
and q = 1%, that is ~600 draws per step instead of 50,000. :meth:`PoissonSampler.epoch`
draws 32 steps at once, as consecutive segments of one longer Bernoulli process.

The generator must be secret: whoever can replay batch membership loses the amplification
by subsampling. :func:`entropy_generator` seeds one from the operating system.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator

import torch

from privacy.errors import PrivacyInputError

__all__ = ["STEPS_PER_DRAW", "PersonIndex", "PoissonSampler", "entropy_generator"]

# Steps drawn in one go by epoch(): the per-step cost falls to a slice and a subtraction.
STEPS_PER_DRAW = 32


def entropy_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from the OS's entropy (not a CSPRNG; see the trainer notes)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63))
    return generator


class PoissonSampler:
    """Index batches of ``rows`` rows, each row included with probability ``sample_rate``."""

    def __init__(self, rows: int, sample_rate: float, generator: torch.Generator) -> None:
        if not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0:
            raise PrivacyInputError(f"rows must be a positive integer, got {rows!r}")
        if not isinstance(sample_rate, int | float) or not 0 < sample_rate <= 1:
            raise PrivacyInputError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.rows = rows
        self.sample_rate = float(sample_rate)
        self.steps_per_epoch = int(1 / self.sample_rate)
        self._generator = generator
        self._inverse_log_keep = 1 / math.log1p(-self.sample_rate) if self.sample_rate < 1 else 0.0

    def draw(self) -> torch.Tensor:
        """One step's row indices (int64, ascending, possibly empty)."""
        return self.draws(1)[0]

    def draws(self, steps: int) -> list[torch.Tensor]:
        """``steps`` independent draws from one Bernoulli process over ``steps * rows``.

        Segment j of that process (positions ``j * rows`` to ``(j + 1) * rows - 1``) is
        exactly one step's draw, independent of the others, so a handful of tensor
        operations serve many steps.
        """
        span = steps * self.rows
        positions = self._bernoulli_positions(span)
        bounds = torch.arange(1, steps + 1, device=positions.device) * self.rows
        ends = torch.searchsorted(positions, bounds).tolist()
        batches, start = [], 0
        for step, end in enumerate(ends):
            batches.append(positions[start:end] - step * self.rows)
            start = end
        return batches

    def _bernoulli_positions(self, span: int) -> torch.Tensor:
        """The selected positions, ascending, among ``span`` Bernoulli(q) trials."""
        device = self._generator.device
        expected = span * self.sample_rate
        block = int(expected + 6 * math.sqrt(expected) + 16)
        chosen, last = [], -1
        while last < span:
            # log(1 - U) with U in [0, 1): never log(0). For q = 1 every gap is 1.
            draws = torch.rand(block, generator=self._generator, dtype=torch.float64, device=device)
            gaps = draws.neg_().log1p_().mul_(self._inverse_log_keep).floor_().add_(1)
            positions = gaps.cumsum_(0).add_(last)
            chosen.append(positions[positions < span])
            last = int(positions[-1])
        return torch.cat(chosen).long()

    def epoch(self) -> Iterator[torch.Tensor]:
        """``steps_per_epoch`` fresh draws, made :data:`STEPS_PER_DRAW` at a time."""
        remaining = self.steps_per_epoch
        while remaining:
            steps = min(remaining, STEPS_PER_DRAW)
            yield from self.draws(steps)
            remaining -= steps

    @property
    def expected_batch_size(self) -> int:
        """Opacus' normaliser under ``loss_reduction="mean"``: ``int(rows * sample_rate)``."""
        return int(self.rows * self.sample_rate)

    def __repr__(self) -> str:
        return (
            f"PoissonSampler(rows={self.rows}, sample_rate={self.sample_rate:.6g}, "
            f"steps_per_epoch={self.steps_per_epoch})"
        )


class PersonIndex:
    """Which rows belong to which person, grouped by person: ``order`` lists row indices
    person by person, ``offsets[p]:offsets[p + 1]`` is person ``p``'s slice of it.

    Built from one integer code per row (the identifier column factorised); person-level
    DP-SGD samples people with :class:`PoissonSampler` over ``people`` and turns each
    draw into a padded people x rows index with :meth:`padded`.
    """

    def __init__(self, order: torch.Tensor, offsets: torch.Tensor, rows: int) -> None:
        self.order, self.offsets, self.rows = order, offsets, rows
        self.counts = offsets[1:] - offsets[:-1]
        if len(self.counts) == 0 or int(self.counts.min()) < 1:
            raise PrivacyInputError("every person needs at least one row, and there must be one")

    @classmethod
    def from_codes(cls, codes: torch.Tensor) -> PersonIndex:
        """From ``codes[i]``, the person of row ``i`` (any integers)."""
        if codes.ndim != 1 or len(codes) == 0 or codes.is_floating_point():
            raise PrivacyInputError("person codes must be a non-empty 1-D integer tensor")
        _, dense = torch.unique(codes, return_inverse=True)
        order = torch.sort(dense, stable=True).indices
        counts = torch.bincount(dense)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(order, offsets, len(codes))

    @property
    def people(self) -> int:
        """How many people the rows belong to."""
        return len(self.counts)

    @property
    def max_rows_per_person(self) -> int:
        """The largest number of rows any one person has."""
        return int(self.counts.max())

    def shard(self, rank: int, world_size: int) -> PersonIndex:
        """Every ``world_size``-th person from ``rank`` on, all their rows (replicas shard
        by person, so each person's rows meet in one replica's clipped sum)."""
        chosen = torch.arange(rank, self.people, world_size)
        index, mask = self.padded(chosen, pad=0)
        counts = self.counts[chosen]
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return PersonIndex(index[mask], offsets, self.rows)

    def padded(self, people: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices of ``people`` as a people x (their most rows) matrix, ``pad`` where
        a person has fewer rows, and the mask of real entries. At least one column."""
        people = people.to(self.offsets.device)
        counts = self.counts[people]
        width = max(int(counts.max()) if len(counts) else 0, 1)
        position = torch.arange(width, device=counts.device)
        mask = position < counts[:, None]
        flat = (self.offsets[people][:, None] + position).clamp_(max=len(self.order) - 1)
        index = torch.where(mask, self.order[flat], torch.full_like(flat, pad))
        return index, mask
