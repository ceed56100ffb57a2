"""Data-parallel DP training: which replica this process is, and the collectives it needs.

DP-SGD across ``world_size`` processes keeps the mechanism of one process (Opacus'
distributed semantics): each replica Poisson-samples its own shard of the rows at the
global sample rate, so every row is still in a step's batch with probability ``q``; the
replicas' clipped sums are added with one all-reduce; the Gaussian noise is drawn once,
by rank 0, before the all-reduce; the sum is divided by the global expected batch size.
The accounting is therefore exactly that of one process with the same global expected
batch (same ``q``, same steps, same noise multiplier).

Processes are started by ``torchrun`` or by the train command itself
(``train.world_size``); ``torch.distributed`` must be initialised before training.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from training.errors import TrainingError, TrainingInputError

__all__ = [
    "SINGLE",
    "Replica",
    "all_reduce_sum",
    "broadcast_parameters",
    "from_environment",
    "initialise",
    "replica_device",
]

# A collective that waits longer than this means a replica died or hung.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Replica:
    """This process's rank among ``world_size`` replicas training one model."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        for name in ("rank", "world_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TrainingInputError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0 <= self.rank < self.world_size:
            raise TrainingInputError(
                f"rank {self.rank} is outside a world of {self.world_size} replicas"
            )

    @property
    def leader(self) -> bool:
        """Rank 0 draws the noise, reserves privacy budget and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def check_initialised(self) -> None:
        """Fail closed unless torch.distributed runs this very world."""
        if not self.distributed:
            return
        if not dist.is_initialized():
            raise TrainingError("world_size > 1 but torch.distributed is not initialised")
        actual = (dist.get_rank(), dist.get_world_size())
        if actual != (self.rank, self.world_size):
            raise TrainingError(
                f"torch.distributed runs rank {actual[0]} of {actual[1]}, "
                f"the trainer was told rank {self.rank} of {self.world_size}"
            )


SINGLE = Replica()


def from_environment() -> Replica | None:
    """The replica torchrun describes in ``RANK`` / ``WORLD_SIZE``, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return Replica(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    except ValueError:
        raise TrainingInputError(
            f"RANK={os.environ['RANK']!r} WORLD_SIZE={os.environ['WORLD_SIZE']!r}: not integers"
        ) from None


def initialise(replica: Replica, device: torch.device) -> None:
    """Join the process group (``env://``: MASTER_ADDR and MASTER_PORT must be set)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=replica.rank,
        world_size=replica.world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )


def replica_device(replica: Replica, device: torch.device) -> torch.device:
    """On CUDA each replica gets its own GPU (torchrun's LOCAL_RANK on a multi-node run)."""
    if device.type != "cuda" or not replica.distributed:
        return device
    local = int(os.environ.get("LOCAL_RANK", replica.rank)) % torch.cuda.device_count()
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def all_reduce_sum(tensor: torch.Tensor, replica: Replica) -> torch.Tensor:
    """Sum ``tensor`` over the replicas, in place."""
    if replica.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_parameters(module: torch.nn.Module, replica: Replica) -> None:
    """Rank 0's weights on every replica (they start equal; this makes it certain)."""
    if replica.distributed:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
