"""``custodian report``: the compliance pack a reviewer reads and signs
(:mod:`custodian.stages.report`)."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import PolicyParams, PrivacyParams, load_section
from custodian.stages import report as stage


def _path_option(name: str, default: str, help_text: str):
    return click.option(
        f"--{name}",
        type=click.Path(path_type=Path),
        default=Path(default),
        show_default=True,
        help=help_text,
    )


@click.command("report")
@_path_option("ingested", "data/ingested", "Ingested datasets and provenance.")
@_path_option("splits", "data/split", "Split directory with provenance records.")
@_path_option("models", "models", "Model directory (model.json, model.safetensors).")
@_path_option("validation", "reports/validation.json", "Validation report.")
@_path_option("checks", "reports/checks.json", "Leakage findings.")
@_path_option("privacy", "reports/privacy.json", "Privacy report of the train stage.")
@_path_option("curve", "reports/train_curve.json", "Training curve.")
@_path_option("manifest", "reports/manifest.json", "Artifact manifest of the audit stage.")
@_path_option("metrics", "reports/metrics.json", "Metrics of the evaluate stage.")
@_path_option("calibration", "reports/calibration.json", "Calibration bins of evaluate.")
@_path_option("out", "reports", "Where the compliance pack goes.")
def report_command(out: Path, **paths: Path) -> None:
    """Decide the release gates and write the compliance pack; exit 1 if a gate fails."""
    policy = load_section(PolicyParams, "policy")
    lifetime = load_section(PrivacyParams, "privacy").lifetime_epsilon
    report = stage.run(policy, lifetime, stage.Inputs(**paths), out)
    results = report.gates
    counts = report.nist_catalog.counts
    click.echo(
        f"wrote {out / 'compliance.json'} and {out / 'compliance.html'}: "
        f"{report.decision.headline}; NIST AI RMF "
        + ", ".join(f"{count} {status}" for status, count in counts.items())
    )
    for result in results:
        if not result.cleared:
            click.echo(f"gate failed: {result.id.value}: {result.detail}")
    stage.require_passed(report, out)
