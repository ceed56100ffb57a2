"""``custodian train``: DP-SGD on the training split (:mod:`custodian.stages.train`)."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import PrivacyParams, TrainParams, load_section
from custodian.stages import train


@click.command("train")
@click.option("--splits", type=click.Path(path_type=Path), required=True)
@click.option("--model-dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--report", type=click.Path(path_type=Path), required=True, help="reports/privacy.json"
)
@click.option(
    "--curve",
    type=click.Path(path_type=Path),
    required=True,
    help="Per-epoch loss and epsilon (a DVC plot).",
)
def train_command(splits: Path, model_dir: Path, report: Path, curve: Path) -> None:
    """Train the model with differential privacy; write the model and privacy report."""
    privacy = load_section(PrivacyParams, "privacy")
    params = load_section(TrainParams, "train")
    trained = train.run(privacy, params, splits, model_dir, report, curve)
    if trained is None:
        return  # a follower replica: its leader reports
    written = trained.privacy
    click.echo(
        f"trained {written.epochs} epochs, {written.steps} steps: epsilon "
        f"{written.epsilon:.3f} at delta {written.delta:g} per {written.unit} (sigma "
        f"{written.noise_multiplier:.3f}, {written.accountant}); "
        f"{written.population or 'dataset'} budget spent "
        f"{written.budget.spent_epsilon:.3f} of {written.budget.lifetime_epsilon:g}"
    )
    if trained.nonfinite_records:  # an operator diagnostic, kept out of the reports
        click.echo(
            f"note: {trained.nonfinite_records} sampled records had a non-finite gradient "
            "and contributed zero",
            err=True,
        )
