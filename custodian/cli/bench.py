"""``custodian bench dp``: DP training throughput, non-private vs Opacus vs fast clipping.

The workloads are built by :mod:`custodian.services.bench`.

All variants run side by side in this process on the same model and data (see
:mod:`training.dp_benchmark`); the printed ratios are what the speed goals are judged by.
The default workload is an MLP 64-256-256-2 on 50,000 synthetic rows at an expected
batch of 512; ``--model transformer`` a small transformer encoder over token sequences;
``--model pipeline`` benchmarks the pipeline's own model on its training split (after
``dvc repro``).
"""

from __future__ import annotations

import json

import click
import torch

from custodian.services.bench import DEFAULT_MODEL, bench_workload
from training.dp_benchmark import VARIANTS, BenchResult, run_benchmark
from training.precision import resolve_device


@click.group("bench")
def bench() -> None:
    """Benchmarks that compare variants side by side in one process."""


@bench.command("dp")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Layer widths of a synthetic MLP (e.g. 64-256-256-2), 'transformer' or 'pipeline'.",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Expected batch size.")
@click.option("--rows", type=click.IntRange(min=2), default=50_000, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seconds", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | auto")
@click.option(
    "--threads", type=click.IntRange(min=1), help="torch intra-op threads (default: torch's)."
)
@click.option("--variant", "variants", multiple=True, type=click.Choice(sorted(VARIANTS)))
@click.option("--memory/--no-memory", default=True, help="Peak memory per variant.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dp_command(
    model: str,
    batch_size: int | None,
    rows: int,
    rounds: int,
    seconds: float,
    device: str,
    threads: int | None,
    variants: tuple[str, ...],
    memory: bool,
    as_json: bool,
) -> None:
    """Samples/s of non-private, Opacus hooks, Opacus ghost and fast DP training."""
    target = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    workload, measure = bench_workload(model, batch_size, rows, target, memory=memory)

    def progress(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    result = run_benchmark(
        workload,
        device=target,
        rounds=rounds,
        seconds_per_round=seconds,
        variants=variants or None,  # None: every variant that runs on the device
        memory=measure,
        progress=progress,
    )
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else _table(result))


def _table(result: BenchResult) -> str:
    lines = [
        f"workload: {result.workload}",
        f"device: {result.device}, torch threads: {result.threads}, rounds: {result.rounds}",
        "",
        f"{'variant':<26}{'samples/s':>12}{'data path':>11}{'peak MiB':>10}",
    ]
    for name, rate in result.samples_per_second.items():
        peak = result.peak_memory_mib.get(name)
        lines.append(
            f"{name:<26}{rate:>12,.0f}{result.data_fraction[name]:>10.1%}"
            f"{'' if peak is None else f'{peak:.1f}':>10}"
        )
    lines += ["", "ratios:"]
    lines += [f"  {name:<36}{value:6.2f}" for name, value in result.ratios().items()]
    lines += [
        "",
        f"max relative error vs Opacus hooks: fp32 {result.max_rel_error_vs_opacus:.2e}, "
        f"bf16 {result.max_rel_error_vs_opacus_bf16:.2e}",
        f"noise per step on {result.device}: {result.noise_ms_per_step:.3f} ms",
    ]
    if torch.get_num_threads() == 1:
        lines.append("note: torch runs single-threaded here")
    return "\n".join(lines)
