"""``custodian plan``: the pre-flight check and what a run would spend; spends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click

from custodian.services.preflight import PreflightFailed, preflight
from governance.errors import InputError


@click.command("plan")
@click.option(
    "--splits",
    type=click.Path(path_type=Path),
    default=Path("data/split"),
    show_default=True,
    help="The split stage's output (`dvc repro split` makes it; it spends nothing).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_command(splits: Path, as_json: bool) -> None:
    """Check every stage's params against the data and policy; print what a run would spend.

    Exits 2 listing every problem the train stage would refuse the run for.
    """
    if not (splits / "train.provenance.json").is_file():
        raise InputError(f"{splits}: no split yet; run `dvc repro split` first (it spends nothing)")
    plan = preflight(splits)
    if as_json:
        click.echo(json.dumps(plan.to_json(), indent=2))
    else:
        click.echo(f"dataset {plan.dataset} (sha256 {plan.dataset_sha256[:12]})")
        for run in plan.runs:
            click.echo(
                f"  {run.purpose:<6} run: {run.rows} rows, sample rate {run.sample_rate:.4f}, "
                f"{run.steps} steps, sigma {run.noise_multiplier:.3f}: epsilon {run.epsilon:.3f}"
            )
        if plan.total_epsilon is not None:
            click.echo(
                f"  budget: spent {plan.spent_epsilon:.3f}, after this run "
                f"{plan.total_epsilon:.3f} of {plan.lifetime_epsilon:g} "
                f"(delta {plan.delta:g}, {plan.accountant}, all runs composed)"
            )
        for note in plan.notes:
            click.echo(f"  note: {note}")
        for problem in plan.problems:
            click.echo(f"  problem: {problem}")
        if not plan.problems:
            click.echo("ok: `dvc repro` can run these params")
    if plan.problems:
        raise PreflightFailed(f"{len(plan.problems)} problem(s); nothing was spent")
