"""Time per epoch of DP training in fp32 and bf16, measured side by side in one process.

Same model, data, batch size and DP settings for both precisions; rounds alternate the
order so that drift on a shared machine does not favour one side. Non-private epochs of
the same model are timed too, for the DP overhead. Only training steps are timed (the
``seconds`` of each epoch record), not validation or accounting.

    .venv/bin/python bench/bench_precision.py [--rows 50000] [--batch-size 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from training.features import EncodedTable
from training.model import ModelConfig
from training.precision import Precision
from training.trainer import DpConfig, TrainConfig, TrainResult, train_dp, train_non_private

PRECISIONS = (Precision.FP32, Precision.BF16)


def synthetic(rows: int, width: int, seed: int) -> EncodedTable:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(rows, width, generator=generator)
    weights = torch.randn(width, generator=generator)
    labels = ((features - 0.5) @ weights > 0).long()
    return EncodedTable(features, labels, tuple(f"x{i}" for i in range(width)))


def epoch_seconds(result: TrainResult) -> list[float]:
    return [record.seconds for record in result.curve]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", default="256,256", help="hidden widths, comma-separated")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per precision")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.threads is not None:
        # On a shared machine, threads that wait for a busy core slow each op many-fold.
        torch.set_num_threads(args.threads)

    train = synthetic(args.rows, args.features, seed=0)
    val = synthetic(2_000, args.features, seed=1)
    model = ModelConfig(hidden=tuple(int(w) for w in args.hidden.split(",")))
    dp = DpConfig(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-6, accountant="rdp")
    timings: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        order = PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            config = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=0.1,
                precision=precision,
                patience=None,
                checkpoint_every=10**9,
                reserve_chunk=10**9,
            )
            with tempfile.TemporaryDirectory() as run_dir:
                private = train_dp(
                    train,
                    val,
                    model,
                    config,
                    dp,
                    run_dir=Path(run_dir),
                    reserve_steps=lambda total: None,
                    progress=False,
                )
            baseline = train_non_private(train, val, model, config, progress=False)
            timings.setdefault(f"dp_{precision}", []).extend(epoch_seconds(private))
            timings.setdefault(f"nonprivate_{precision}", []).extend(epoch_seconds(baseline))

    median = {name: statistics.median(values) for name, values in timings.items()}
    report = {
        "workload": {
            "rows": args.rows,
            "model": f"{args.features}-{args.hidden.replace(',', '-')}-2",
            "batch_size": args.batch_size,
            "epochs_timed_per_variant": args.epochs * args.rounds,
            "torch_threads": torch.get_num_threads(),
        },
        "seconds_per_epoch": median,
        "samples_per_second": {name: args.rows / seconds for name, seconds in median.items()},
        "dp_bf16_speedup_over_fp32": median["dp_fp32"] / median["dp_bf16"],
        "nonprivate_bf16_speedup_over_fp32": median["nonprivate_fp32"] / median["nonprivate_bf16"],
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"workload: {report['workload']}")
    print(f"{'variant':<18}{'s/epoch':>10}{'samples/s':>12}")
    for name, seconds in median.items():
        print(f"{name:<18}{seconds:>10.3f}{args.rows / seconds:>12.0f}")
    print(f"DP bf16 speed-up over fp32: {report['dp_bf16_speedup_over_fp32']:.2f}x")
    print(
        f"non-private bf16 speed-up over fp32: {report['nonprivate_bf16_speedup_over_fp32']:.2f}x"
    )


if __name__ == "__main__":
    main()
