"""Start the processes of a data-parallel training run (``train.world_size``) and join them.

``custodian train`` with ``train.world_size: N`` starts N - 1 follower processes on this
machine, each the same ``custodian train`` command with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), and trains as rank 0, the
leader: only the leader reserves privacy budget, writes checkpoints, outputs and audit
events. Under ``torchrun`` every process is started by torchrun instead (multi-node is
``torchrun --nnodes ...``) and each reads its rank from that environment.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist

from training.errors import TrainingError, TrainingInputError
from training.replicas import SINGLE, Replica, from_environment, initialise

__all__ = ["replica_group"]


@contextlib.contextmanager
def replica_group(world_size: int, argv: Sequence[str], device: torch.device) -> Iterator[Replica]:
    """This process's replica in a joined process group (``SINGLE`` for one process)."""
    launched = from_environment()
    if launched is not None:
        if launched.world_size != world_size:
            raise TrainingInputError(
                f"params.yaml: train.world_size is {world_size} but torchrun started "
                f"{launched.world_size} processes"
            )
        with _joined(launched, device):
            yield launched
        return
    if world_size == 1:
        yield SINGLE
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(_free_port())
    followers = [_start_follower(rank, world_size, argv) for rank in range(1, world_size)]
    try:
        with _joined(Replica(0, world_size), device):
            yield Replica(0, world_size)
        failed = [(rank, f.wait()) for rank, f in enumerate(followers, start=1) if f.wait()]
        if failed:
            raise TrainingError(
                "replica(s) failed: "
                + ", ".join(f"rank {rank} exited {code}" for rank, code in failed)
            )
    finally:
        for follower in followers:
            if follower.poll() is None:
                follower.terminate()
                follower.wait()


@contextlib.contextmanager
def _joined(replica: Replica, device: torch.device) -> Iterator[None]:
    initialise(replica, device)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _start_follower(rank: int, world_size: int, argv: Sequence[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world_size)}
    return subprocess.Popen(
        [sys.executable, "-c", "from custodian.cli.main import main; main()", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
