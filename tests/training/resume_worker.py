"""Training subprocess for the SIGKILL/resume test.

Usage: ``python resume_worker.py RUN_DIR LOG RESULT --delay SECONDS``. The reservation
callback stands in for the budget ledger: it appends each reserved total to LOG and
fsyncs before returning, and a rerun passes the last total as ``already_reserved``.
``--delay`` slows each reservation so the test can kill the process mid-run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from training.features import EncodedTable
from training.model import ModelConfig
from training.trainer import DpConfig, TrainConfig, train_dp

CONFIG = TrainConfig(
    epochs=6, batch_size=50, learning_rate=0.5, patience=None, checkpoint_every=10, reserve_chunk=1
)
DP = DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, accountant="rdp")


def table(rows: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, 4, generator=generator)
    labels = (features[:, 0] > features[:, 1]).long()
    return EncodedTable(features, labels, ("a", "b", "c", "d"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("log", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    # Tiny model: more threads only contend with the test runner for the cores.
    torch.set_num_threads(1)
    recorded = args.log.read_text().split() if args.log.exists() else []

    def reserve(total: int) -> None:
        with args.log.open("a") as log:
            log.write(f"{total}\n")
            log.flush()
            os.fsync(log.fileno())
        time.sleep(args.delay)

    result = train_dp(
        table(1000, 0),
        table(200, 1),
        ModelConfig(hidden=(8,)),
        CONFIG,
        DP,
        run_dir=args.run_dir,
        reserve_steps=reserve,
        already_reserved=int(recorded[-1]) if recorded else 0,
        progress=False,
    )
    summary = {
        "steps": result.steps,
        "accounted_steps": result.accounted_steps,
        "history_steps": sum(entry.steps for entry in result.history),
        "resumed_from_step": result.resumed_from_step,
    }
    args.result.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
