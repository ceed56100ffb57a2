"""``custodian privacy ledger``: the per-population privacy budget ledger."""

from __future__ import annotations

import json
from typing import Any

import click

from custodian.services.dp_runs import ledger_rows


@click.group("privacy")
def privacy_group() -> None:
    """Inspect the privacy budget ledger (one budget per population)."""


@privacy_group.command("ledger")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_command(as_json: bool) -> None:
    """Epsilon spent per population (or dataset): each run's epsilon and the total, every
    run charged to it composed."""
    rows = ledger_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no privacy spent yet")
    for row in rows:
        click.echo(
            f"{_budget_name(row)}: epsilon {row['spent_epsilon']:.3f} in total "
            f"at delta {row['delta']:g} ({row['accountant']}) over {len(row['runs'])} "
            f"run(s) composed, {row['steps']} steps"
        )
        for run in row["runs"]:
            click.echo(
                f"  {run['run_id']:<36} epsilon {run['epsilon']:.3f} alone, "
                f"{run['steps']} steps, sigma {run['noise_multiplier']:.3f}"
            )


def _budget_name(row: dict[str, Any]) -> str:
    names = ", ".join(
        name or sha[:12] for name, sha in zip(row["dataset_names"], row["datasets"], strict=True)
    )
    if row["population"] is not None:
        return f"population {row['population']} ({len(row['datasets'])} dataset(s): {names})"
    name = row["dataset"] or "(not registered here)"
    return f"dataset {name} (sha256 {row['dataset_sha256'][:12]})"
