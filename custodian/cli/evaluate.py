"""``custodian evaluate``: utility, calibration, slices, robustness and the privacy audit
of the released model (:mod:`custodian.stages.evaluate`)."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.outputs import MetricsReport
from custodian.params import (
    EvaluateParams,
    PolicyParams,
    PrivacyParams,
    TrainParams,
    load_section,
)
from custodian.stages import evaluate

_PATH = click.Path(path_type=Path)


@click.command("evaluate")
@click.option("--splits", type=_PATH, required=True)
@click.option("--model-dir", type=_PATH, required=True)
@click.option(
    "--privacy-report",
    type=_PATH,
    required=True,
    help="reports/privacy.json of the model evaluated.",
)
@click.option("--out", type=_PATH, required=True, help="reports/metrics.json")
@click.option(
    "--calibration-plot", type=_PATH, required=True, help="Reliability diagram (a DVC plot)."
)
@click.option(
    "--slices-plot",
    type=_PATH,
    required=True,
    help="Accuracy per slice, DP vs reference (a DVC plot).",
)
@click.option(
    "--headline",
    type=_PATH,
    help="reports/headline.json: the few numbers `dvc metrics show` should show.",
)
def evaluate_command(**paths: Path) -> None:
    """Evaluate the DP model: utility, calibration, slices, robustness, privacy audit."""
    evaluated = evaluate.run(
        load_section(EvaluateParams, "evaluate"),
        load_section(TrainParams, "train"),
        load_section(PrivacyParams, "privacy"),
        load_section(PolicyParams, "policy").allow_nonprivate_reference,
        **paths,
    )
    click.echo(_summary(evaluated.metrics))
    click.echo(
        f"evaluated in {evaluated.seconds:.1f} s (reference model "
        f"{evaluated.reference_seconds:.1f} s, privacy audit {evaluated.audit_seconds:.1f} s)"
    )


def _summary(metrics: MetricsReport) -> str:
    audit = metrics.privacy_audit
    parts = [
        f"test accuracy {metrics.accuracy:.4f} (majority-class baseline "
        f"{metrics.baseline.accuracy:.4f})",
        f"ECE {metrics.calibration.ece:.4f}",
        f"MIA AUC {audit.mia_auc:.4f}",
    ]
    worst = metrics.worst_slice
    if worst is not None:
        parts.append(
            f"worst slice {worst.attribute}={worst.slice} accuracy {worst.accuracy:.4f} "
            f"(largest gap {worst.gap:.4f}, {worst.gap_attribute})"
        )
    bound = audit.epsilon_lower_bound
    parts.append(
        f"audit {audit.mode}: "
        + (
            f"epsilon lower bound {bound:.4f} <= accountant epsilon {audit.accountant_epsilon:.4f}"
            if bound is not None
            else "no bound computed"
        )
    )
    return "; ".join(parts)
