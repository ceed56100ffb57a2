"""One replica of a two-process data-parallel DP run (started by test_replicas.py).

Usage: ``python replica_worker.py RANK WORLD_SIZE PORT OUT_DIR``. Each replica trains
the same configuration with the gloo backend, then measures the noise on its gradients
with clipping made negligible, and writes what it saw to ``OUT_DIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from training.features import EncodedTable
from training.model import ModelConfig
from training.precision import LossScaler, precision_strategy
from training.private_steps import ClippingMode, StepSetup, private_stepper
from training.replicas import Replica, initialise
from training.trainer import DpConfig, TrainConfig, plan_steps, train_dp

CONFIG = TrainConfig(epochs=3, batch_size=100, learning_rate=0.5, patience=None)
DP = DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, accountant="rdp")


def table(rows: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 8, generator=generator)
    weights = torch.tensor([3.0, -2.0, 1.5, 0.0, 0.0, 1.0, -1.0, 0.5])
    labels = ((features - 0.5) @ weights + 0.3 * torch.randn(rows, generator=generator) > 0).long()
    return EncodedTable(features, labels, tuple(f"f{i}" for i in range(8)))


def noise_std(replica: Replica, train: EncodedTable) -> float:
    """Gradient std after one step where noise (sigma 1e6) swamps clipped sums (<= 100)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.ReLU(), torch.nn.Linear(512, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    seen: list[torch.Tensor] = []
    optimizer.register_step_pre_hook(
        lambda *_: seen.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    )
    plan = plan_steps(len(train), 100, 1)
    stepper = private_stepper(
        ClippingMode.FAST,
        StepSetup(
            model=model,
            optimizer=optimizer,
            train=train,
            batch_size=100,
            sample_rate=plan.sample_rate,
            steps_per_epoch=plan.steps_per_epoch,
            noise_multiplier=1e6,
            max_grad_norm=1.0,
            accountant="rdp",
            strategy=precision_strategy("fp32", torch.device("cpu")),
            scaler=LossScaler(enabled=False),
            device=torch.device("cpu"),
            max_physical_batch_size=None,
            replica=replica,
        ),
    )
    stepper.step(stepper.epoch())
    stepper.close()
    return float(seen[0].std())


def main() -> None:
    rank, world_size, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    replica = Replica(rank, world_size)
    initialise(replica, torch.device("cpu"))
    reserved: list[int] = []
    train, val = table(2000, 0), table(500, 1)
    result = train_dp(
        train,
        val,
        ModelConfig(hidden=(16,)),
        CONFIG,
        DP,
        run_dir=out / "run",
        reserve_steps=reserved.append,
        progress=False,
        replica=replica,
    )
    accuracy = (result.model(val.features).argmax(1) == val.labels).float().mean().item()
    report = {
        "history": [list(entry.as_opacus()) for entry in result.history],
        "epsilon": result.epsilon,
        "reserved": reserved,
        "weights": [float(v) for v in torch.cat([p.flatten() for p in result.model.parameters()])],
        "accuracy": accuracy,
        "noise_std": noise_std(replica, train),
    }
    dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
