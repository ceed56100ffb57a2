"""``custodian privacy ledger``: the per-dataset privacy budget ledger."""

from __future__ import annotations

import json

import click

from custodian.services.dp_runs import ledger_spends
from privacy.ledger import DatasetSpend


@click.group("privacy")
def privacy_group() -> None:
    """Inspect the privacy budget ledger (one budget per population)."""


@privacy_group.command("ledger")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_command(as_json: bool) -> None:
    """Epsilon spent per population (or dataset), composed over every run charged to it."""
    spends = ledger_spends()
    if as_json:
        click.echo(json.dumps([s.to_json() for s in spends], indent=2))
        return
    if not spends:
        click.echo("no privacy spent yet")
    for spend in spends:
        click.echo(
            f"{_budget_name(spend)}: epsilon {spend.spent_epsilon:.3f} "
            f"at delta {spend.delta:g} ({spend.accountant}) over {len(spend.runs)} "
            f"run(s), {spend.steps} steps"
        )


def _budget_name(spend: DatasetSpend) -> str:
    if spend.population is not None:
        return f"population {spend.population} ({len(spend.datasets)} dataset(s))"
    return f"dataset {spend.dataset_sha256[:12]}"
