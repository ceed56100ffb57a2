"""Data-parallel DP training over two gloo processes keeps one process's mechanism."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from privacy.accounting import SgdSteps, epsilon_of
from training.errors import TrainingInputError
from training.replicas import Replica
from training.trainer import plan_steps

WORKER = Path(__file__).with_name("replica_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    out = tmp_path_factory.mktemp("replicas")
    port = free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), "2", port, str(out)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr
    return (
        json.loads((out / "rank0.json").read_text()),
        json.loads((out / "rank1.json").read_text()),
        out,
    )


def test_replicas_end_with_identical_weights_and_learn(two_replicas) -> None:
    leader, follower, _ = two_replicas
    assert leader["weights"] == follower["weights"]
    assert leader["accuracy"] > 0.8


def test_accounting_is_one_process_with_the_global_batch(two_replicas) -> None:
    leader, follower, _ = two_replicas
    plan = plan_steps(2000, 100, 3)
    assert leader["history"] == [[1.0, plan.sample_rate, plan.total_steps]]
    assert follower["history"] == leader["history"]
    history = (SgdSteps(1.0, plan.sample_rate, plan.total_steps),)
    assert leader["epsilon"] == pytest.approx(epsilon_of(history, 1e-5, "rdp"))


def test_only_the_leader_reserves_and_checkpoints(two_replicas) -> None:
    leader, follower, out = two_replicas
    assert leader["reserved"][-1] == plan_steps(2000, 100, 3).total_steps
    assert follower["reserved"] == []
    assert (out / "run" / "checkpoint.json").is_file()


def test_noise_is_added_once_for_the_global_batch(two_replicas) -> None:
    """std sigma * C / expected batch; twice the variance if both replicas added noise."""
    leader, follower, _ = two_replicas
    expected = 1e6 * 1.0 / 100  # sigma * C / int(N q)
    assert leader["noise_std"] == pytest.approx(expected, rel=0.03)
    assert follower["noise_std"] == leader["noise_std"]


def test_a_replica_outside_its_world_is_refused() -> None:
    with pytest.raises(TrainingInputError, match="rank 2 is outside a world of 2"):
        Replica(2, 2)


def test_one_process_noise_has_the_same_std() -> None:
    from tests.training.replica_worker import noise_std, table

    assert noise_std(Replica(), table(2000, 0)) == pytest.approx(1e6 / 100, rel=0.03)
