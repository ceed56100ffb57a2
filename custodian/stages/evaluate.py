"""The evaluate stage: what privacy cost, whom it cost, and whether the guarantee holds.

The procedure, top to bottom: score the released DP model on the test split (utility next
to the majority-class baseline, calibration, every slice of every sensitive attribute the
provenance declares and every pair of them, with base rates, error rates and confidence
intervals, robustness to feature noise and missing values); where
``policy.allow_nonprivate_reference`` allows it, train the non-private reference model on
the same split in this run and take the difference (the privacy cost, overall and per
slice), else measure what is left against the baseline; run
membership inference on the released model (training vs test records); then audit the
privacy guarantee empirically with the one-run canary audit
(:mod:`custodian.stages.privacy_audit`), which fails loudly if its lower bound exceeds the
accountant's epsilon.

What is released and what is not
    The reference model is internal evidence: its weights are never written, and the
    report marks it ``released: false``. Its metrics, like every metric here, are computed
    outside DP: the test-split metrics and the membership-inference AUC (which uses the
    training records' losses) are aggregate statistics of private data.
    The audit run (mode ``separate_run``) is a second DP-SGD run with the production
    settings on the training split plus canaries. It keeps the released model free of
    canaries at no utility cost, but it spends privacy: its steps are reserved in the
    dataset's privacy ledger and the audit log before they are taken, exactly like the
    train stage's, and count against the lifetime budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audits.files import atomic_write_json
from custodian.outputs import MetricsReport, PrivacyReport
from custodian.params import (
    EvaluateParams,
    PrivacyParams,
    TrainParams,
)
from custodian.services.datasets import load_dataset
from custodian.services.dp_runs import (
    feature_spec,
    model_config,
    train_config,
)
from custodian.services.preflight import slice_specs
from custodian.stages.privacy_audit import AuditInputs, EncodedSplits, run_audit
from governance.errors import InputError
from governance.provenance import ColumnRole as SchemaRole
from governance.provenance import Provenance
from privacy.empirical import membership_inference
from training.canaries import loss_scores
from training.checkpoint import load_model
from training.evaluation import (
    BinaryMetrics,
    GroupMetrics,
    Perturbation,
    SliceSpec,
    WorstSlice,
    attribute_gaps,
    baseline_metrics,
    binary_metrics,
    calibration,
    group_metrics,
    intersection_labels,
    perturb,
    perturbed_columns,
    sensitive_values,
    slice_labels,
    worst_slice,
)
from training.features import EncodedTable, FeatureSpec, encode_table
from training.model import Mlp, predict_proba
from training.precision import resolve_device
from training.trainer import train_non_private

# The report's membership-inference TPR is at this false-positive rate (its key says 1%).
MIA_FPR = 0.01
# The metrics whose reference-minus-DP difference is the privacy cost.
COST_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss")


@dataclass(frozen=True)
class _Inputs:
    """The splits, encoded as the model expects, and the settings of this evaluation."""

    splits: EncodedSplits
    test_frame: pd.DataFrame
    params: EvaluateParams
    allow_reference: bool

    def encode(self, frame: pd.DataFrame, source: str) -> EncodedTable:
        splits = self.splits
        return _encode(frame, splits.columns, splits.label, splits.train_params, source)


@dataclass(frozen=True)
class Evaluated:
    """The metrics written, and how long the two extra trainings took (for the log line)."""

    metrics: MetricsReport
    seconds: float
    reference_seconds: float
    audit_seconds: float


def run(
    params: EvaluateParams,
    train_params: TrainParams,
    privacy: PrivacyParams,
    allow_reference: bool,
    splits: Path,
    model_dir: Path,
    privacy_report: Path,
    out: Path,
    calibration_plot: Path,
    slices_plot: Path,
    headline: Path | None = None,
) -> Evaluated:
    """Evaluate the released model in ``model_dir``; write ``out`` and the two plots."""
    started = time.monotonic()
    production = PrivacyReport.read(privacy_report)
    inputs = _load_inputs(splits, params, train_params, privacy, allow_reference)
    released = load_model(model_dir)
    if released.feature_names != inputs.splits.test.feature_names:
        raise InputError(
            f"{model_dir}: the model's features differ from the encoded test split "
            "(retrain after changing the schema or train.include_sensitive)"
        )
    model = released.model
    specs = _slice_specs(inputs.splits.record, params.slices)
    labels = inputs.splits.test.labels.numpy()

    probabilities = _positive_probability(model, inputs.splits.test)
    utility = binary_metrics(labels, probabilities)
    baseline = baseline_metrics(labels)
    reliability = calibration(labels, probabilities, params.calibration_bins)
    groups = _groups(inputs.test_frame, specs, labels, probabilities, params)
    slices = _metrics_only(groups)
    worst = worst_slice(slices, params.min_slice_rows)
    robustness = _robustness(inputs, model)
    pairs = _intersections(inputs.test_frame, specs, labels, probabilities, params)

    timer = time.monotonic()
    reference_json: dict[str, Any]
    if inputs.allow_reference:
        reference_model = train_non_private(
            inputs.splits.train,
            inputs.splits.val,
            model_config(inputs.splits.train_params),
            train_config(inputs.splits.train_params),
            device=resolve_device(inputs.splits.train_params.device),
        ).model
        reference_probabilities = _positive_probability(reference_model, inputs.splits.test)
        reference = binary_metrics(labels, reference_probabilities)
        reference_slices = _metrics_only(
            _groups(inputs.test_frame, specs, labels, reference_probabilities, params)
        )
        reference_worst = worst_slice(reference_slices, params.min_slice_rows)
        reference_json = {
            **reference.to_json(),
            "trained": True,
            "released": False,
            "worst_slice": reference_worst.to_json() if reference_worst is not None else None,
            "note": (
                "trained without DP on the same training split in this run, with the train "
                "section's settings; internal evidence only: its weights are never written "
                "or released"
            ),
        }
        cost = _privacy_cost(reference, utility, reference_slices, slices, reference_worst, worst)
    else:
        reference_json = {
            "trained": False,
            "released": False,
            "note": (
                "not trained: policy.allow_nonprivate_reference is false (the dataset's rule "
                "is to train only with differential privacy); the privacy cost is measured "
                "against the majority-class baseline instead"
            ),
        }
        cost = _cost_against_baseline(baseline, utility, groups)
    reference_seconds = time.monotonic() - timer

    mia = membership_inference(
        loss_scores(model, inputs.splits.train), loss_scores(model, inputs.splits.test), MIA_FPR
    )
    timer = time.monotonic()
    audit = run_audit(
        AuditInputs(inputs.splits, params.audit),
        production,
    )
    audit_seconds = time.monotonic() - timer

    report = MetricsReport(
        split="test",
        **utility.to_json(),
        baseline={
            **baseline.to_json(),
            "predicts": int(baseline.positive_rate >= 0.5),
            "note": "the majority class of the test split for every row: what a model must beat",
        },
        lift_over_baseline=utility.accuracy - baseline.accuracy,
        calibration={"ece": reliability.ece, "bins": reliability.bins},
        slices={attribute: _groups_json(by) for attribute, by in groups.items()},
        slice_min_rows=params.min_slice_rows,
        slice_confidence=params.slice_confidence,
        worst_slice=worst.to_json() if worst is not None else None,
        fairness=_fairness_json(groups),
        intersections={name: _groups_json(by_pair) for name, by_pair in pairs.items()},
        intersection_fairness=_fairness_json(pairs),
        sensitive_values={
            spec.column: sensitive_values(inputs.test_frame[spec.column], spec) for spec in specs
        },
        robustness=robustness,
        reference=reference_json,
        privacy_cost=cost,
        privacy_audit={
            **audit,
            "mia_auc": mia.auc,
            "mia_tpr_at_1pct_fpr": mia.tpr_at_fpr,
            "mia": (
                "loss-based membership inference on the released model: "
                f"{mia.members} training records vs {mia.non_members} test records"
            ),
        },
    )
    atomic_write_json(
        calibration_plot,
        [
            {"bin": b.bin, "confidence": b.confidence, "accuracy": b.accuracy, "count": b.count}
            for b in reliability.table
        ],
    )
    atomic_write_json(slices_plot, _slices_plot(groups))
    report.write(out)
    if headline is not None:
        atomic_write_json(headline, _headline(report, production, privacy))
    return Evaluated(
        metrics=report,
        seconds=time.monotonic() - started,
        reference_seconds=reference_seconds,
        audit_seconds=audit_seconds,
    )


def _headline(
    metrics: MetricsReport, production: PrivacyReport, privacy: PrivacyParams
) -> dict[str, Any]:
    """The headline numbers, flat; delta as text, which `dvc metrics show` would round to 0."""
    report = metrics.model_dump(mode="json")
    budget = production.model_dump(mode="json").get("budget") or {}
    audit = report["privacy_audit"]
    worst = report["worst_slice"]
    spent = audit.get("spent_epsilon_after")
    if spent is None:  # no audit run: the train stage's report holds the total
        spent = budget.get("spent_epsilon")
    return {
        "accuracy": report["accuracy"],
        "roc_auc": report["roc_auc"],
        "lift_over_baseline": report["lift_over_baseline"],
        "worst_slice_gap": worst["gap"] if worst else None,
        "epsilon": production.epsilon,
        "delta": f"{production.delta:g}",
        "dataset_epsilon_spent": spent,
        "lifetime_epsilon": privacy.lifetime_epsilon,
        "audit_epsilon_lower_bound": audit.get("epsilon_lower_bound"),
    }


def _load_inputs(
    splits: Path,
    params: EvaluateParams,
    train_params: TrainParams,
    privacy: PrivacyParams,
    allow_reference: bool,
) -> _Inputs:
    record, train_frame = load_dataset(splits, "train")
    _, val_frame = load_dataset(splits, "val")
    _, test_frame = load_dataset(splits, "test")
    label = record.column(SchemaRole.label)
    if label is None:
        raise InputError(f"{splits / 'train.provenance.json'}: no column has the role label")
    columns = [feature_spec(c) for c in record.columns]
    tables = {
        name: _encode(frame, columns, label, train_params, str(splits / f"{name}.csv"))
        for name, frame in (("train", train_frame), ("val", val_frame), ("test", test_frame))
    }
    splits = EncodedSplits(
        record=record,
        columns=columns,
        label=label,
        train=tables["train"],
        val=tables["val"],
        test=tables["test"],
        train_params=train_params,
        privacy=privacy,
    )
    return _Inputs(splits, test_frame, params, allow_reference)


def _encode(
    frame: pd.DataFrame,
    columns: list[FeatureSpec],
    label: str,
    train_params: TrainParams,
    source: str,
) -> EncodedTable:
    return encode_table(
        frame, columns, label, include_sensitive=train_params.include_sensitive, source=source
    )


def _slice_specs(record: Provenance, edges: Mapping[str, list[float]]) -> list[SliceSpec]:
    """One spec per sensitive column: its categories, or the bucket edges params give it."""
    specs, problems = slice_specs(record, dict(edges))
    if problems:
        raise InputError(f"params.yaml: {'; '.join(problems)}")
    return specs


def _groups(
    frame: pd.DataFrame,
    specs: list[SliceSpec],
    labels: np.ndarray,
    probabilities: np.ndarray,
    params: EvaluateParams,
) -> dict[str, dict[str, GroupMetrics]]:
    return {
        spec.column: _by_label(
            slice_labels(frame[spec.column], spec).to_numpy(), labels, probabilities, params
        )
        for spec in specs
    }


def _intersections(
    frame: pd.DataFrame,
    specs: list[SliceSpec],
    labels: np.ndarray,
    probabilities: np.ndarray,
    params: EvaluateParams,
) -> dict[str, dict[str, GroupMetrics]]:
    """Every pair of sensitive attributes, sliced together (``a & b``)."""
    result = {}
    for index, first in enumerate(specs):
        for second in specs[index + 1 :]:
            names = intersection_labels(
                slice_labels(frame[first.column], first), slice_labels(frame[second.column], second)
            ).to_numpy()
            result[f"{first.column} & {second.column}"] = _by_label(
                names, labels, probabilities, params
            )
    return result


def _by_label(
    names: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, params: EvaluateParams
) -> dict[str, GroupMetrics]:
    return {
        name: group_metrics(
            labels[names == name],
            probabilities[names == name],
            min_rows=params.min_slice_rows,
            confidence=params.slice_confidence,
        )
        for name in sorted(set(names), key=str)
    }


def _metrics_only(
    groups: Mapping[str, Mapping[str, GroupMetrics]],
) -> dict[str, dict[str, BinaryMetrics]]:
    return {a: {name: g.metrics for name, g in by.items()} for a, by in groups.items()}


def _groups_json(by_slice: Mapping[str, GroupMetrics]) -> dict[str, Any]:
    return {name: g.to_json() for name, g in by_slice.items()}


def _fairness_json(groups: Mapping[str, Mapping[str, GroupMetrics]]) -> dict[str, Any]:
    """Per attribute (or pair), the gaps among slices that are not small; None if < 2."""
    result: dict[str, Any] = {}
    for attribute, by_slice in groups.items():
        gaps = attribute_gaps(attribute, by_slice)
        result[attribute] = gaps.to_json() if gaps is not None else None
    return result


def _slices_plot(groups: Mapping[str, Mapping[str, GroupMetrics]]) -> list[dict[str, Any]]:
    return [
        {
            "slice": f"{attribute}={name}",
            "rows": g.metrics.rows,
            "accuracy": g.metrics.accuracy,
            "baseline_accuracy": g.baseline_accuracy,
        }
        for attribute, by_slice in groups.items()
        for name, g in by_slice.items()
    ]


def _robustness(inputs: _Inputs, model: Mlp) -> dict[str, Any]:
    """Metrics on the test split with raw features perturbed at each configured level."""
    settings = inputs.params.robustness
    rng = np.random.default_rng(settings.seed)
    labels = inputs.splits.test.labels.numpy()
    include = inputs.splits.train_params.include_sensitive
    result: dict[str, Any] = {"seed": settings.seed}
    for kind, levels in (
        (Perturbation.FEATURE_NOISE, settings.feature_noise),
        (Perturbation.MISSING, settings.missing),
    ):
        by_level: dict[str, Any] = {}
        for level in levels:
            frame = perturb(
                inputs.test_frame,
                inputs.splits.columns,
                kind,
                level,
                rng,
                include_sensitive=include,
            )
            table = inputs.encode(frame, f"test split with {kind} {level:g}")
            m = binary_metrics(labels, _positive_probability(model, table))
            by_level[f"{level * 100:g}pct"] = {
                "level": level,
                "accuracy": m.accuracy,
                "balanced_accuracy": m.balanced_accuracy,
                "roc_auc": m.roc_auc,
                "log_loss": m.log_loss,
            }
        result[kind.value] = {
            "columns": perturbed_columns(inputs.splits.columns, kind, include_sensitive=include),
            "levels": by_level,
        }
    return result


def _privacy_cost(
    reference: BinaryMetrics,
    dp: BinaryMetrics,
    reference_slices: Mapping[str, Mapping[str, BinaryMetrics]],
    dp_slices: Mapping[str, Mapping[str, BinaryMetrics]],
    reference_worst: WorstSlice | None,
    dp_worst: WorstSlice | None,
) -> dict[str, Any]:
    """Reference minus DP (for log loss, negative means DP is worse)."""
    cost: dict[str, Any] = {
        name: _difference(getattr(reference, name), getattr(dp, name)) for name in COST_METRICS
    }
    cost["worst_slice_accuracy"] = (
        reference_worst.accuracy - dp_worst.accuracy
        if reference_worst is not None and dp_worst is not None
        else None
    )
    cost["slices"] = {
        attribute: {
            name: reference_slices[attribute][name].accuracy - m.accuracy
            for name, m in by_slice.items()
        }
        for attribute, by_slice in dp_slices.items()
    }
    return cost


def _cost_against_baseline(
    baseline: BinaryMetrics,
    dp: BinaryMetrics,
    groups: Mapping[str, Mapping[str, GroupMetrics]],
) -> dict[str, Any]:
    """Without a reference: what the DP model keeps over the majority-class baseline."""
    return {
        "against": "baseline",
        "note": (
            "no non-private reference was trained; each value is the DP model minus the "
            "majority-class baseline (for log loss, negative means the model is better)"
        ),
        "lift_over_baseline": {
            name: _difference(getattr(dp, name), getattr(baseline, name)) for name in COST_METRICS
        },
        "slices": {
            attribute: {name: g.metrics.accuracy - g.baseline_accuracy for name, g in by.items()}
            for attribute, by in groups.items()
        },
    }


def _difference(reference: float | None, dp: float | None) -> float | None:
    return None if reference is None or dp is None else reference - dp


def _positive_probability(model: Mlp, table: EncodedTable) -> np.ndarray:
    return predict_proba(model, table.features)[:, 1].double().numpy()
