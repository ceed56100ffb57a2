"""The evaluate stage's empirical privacy audit: one component per mode, one charged run each.

Every mode but ``disabled`` runs DP-SGD a second time with the production train and
privacy settings (Steinke, Nasr and Jagielski's one-run audit), reserves that run's steps
in the privacy ledger before taking them, and bounds epsilon from below by how well the
canaries' membership can be guessed. The modes differ only in their canaries and score:

``separate_run`` (black box)
    input-space canary records added to the training split, scored by the audited
    model's loss on each;
``white_box``
    gradient canaries added to the clipped sums, scored from every step's noisy sum.

A finished run is reused while its mechanism (data, train, privacy and audit settings)
is unchanged, so a change to the slices or the robustness settings pays nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from audits.files import atomic_write_json
from custodian.outputs import PrivacyReport
from custodian.params import PARAMS_FILE, AuditMode, AuditParams, PrivacyParams, TrainParams
from custodian.services.dp_runs import (
    ChargedRun,
    charged_train_dp,
    dataset_spent,
    finished_run,
    mark_finished,
    model_parameters,
)
from governance.errors import InputError
from governance.provenance import Provenance
from privacy.empirical import OneRunAudit, audit_one_run, check_bound_below, membership_inference
from training.canaries import GradientCanaries, draw_canaries, loss_scores, with_canaries
from training.evaluation import binary_metrics
from training.features import EncodedTable, FeatureSpec
from training.model import predict_proba
from training.precision import resolve_device

__all__ = ["AUDIT_RESULT", "AuditInputs", "run_audit"]

# The audit run's result, kept in its run directory so that an evaluate rerun that does
# not change the run's mechanism reuses it (plain JSON; nothing is unpickled).
AUDIT_RESULT = "audit.json"
# The canary membership inference's TPR is read at this false-positive rate (as the
# released model's, in the evaluate stage).
_CANARY_MIA_FPR = 0.01

_AUDITED = (
    "the DP-SGD training mechanism at these settings, in a separate run with the production "
    "train and privacy settings on the training split (charged to the budget, never "
    "released); not the released model's weights"
)
_WHITE_BOX_AUDITED = (
    "; white-box: each canary is a gradient of norm max_grad_norm on one parameter, "
    "added to the clipped sum whenever the canary is included and sampled, and "
    "scored from every step's noisy sum less the other records' contributions (an "
    "adversary who knows them, as DP allows): this tests sampling, noise and "
    "accounting, not the clipping of real records"
)
_MEANING = (
    "with the stated confidence, the mechanism is not (epsilon, delta)-DP for any epsilon "
    "below epsilon_lower_bound; it must never exceed accountant_epsilon"
)


@dataclass(frozen=True)
class EncodedSplits:
    """The splits as the model sees them, with the settings they were encoded and trained
    under: what the evaluation and the audit run both read."""

    record: Provenance
    columns: list[FeatureSpec]
    label: str
    train: EncodedTable
    val: EncodedTable
    test: EncodedTable
    train_params: TrainParams
    privacy: PrivacyParams


@dataclass(frozen=True)
class AuditInputs:
    """What an audit reads: the encoded splits with the settings its run repeats, and its own."""

    splits: EncodedSplits
    settings: AuditParams

    def identity(self) -> dict[str, object]:
        """What makes two audit runs the same mechanism."""
        return {
            "dataset": self.splits.record.source_sha256,
            "train": self.splits.record.sha256,
            "train_params": self.splits.train_params.model_dump(),
            "privacy": self.splits.privacy.model_dump(),
            "audit": self.settings.model_dump(mode="json"),
        }

    def spent(self, production: PrivacyReport) -> float:
        """The population's spend now, read afresh from the ledger."""
        return dataset_spent(
            self.splits.record.source_sha256,
            production.delta,
            self.splits.privacy.accountant,
            self.splits.record.population,
        )


def run_audit(inputs: AuditInputs, production: PrivacyReport) -> dict[str, Any]:
    """The ``privacy_audit`` section of the metrics (less the membership inference)."""
    return _AUDITS[inputs.settings.mode](inputs, production)


def _separate_run(inputs: AuditInputs, production: PrivacyReport) -> dict[str, Any]:
    """Black box: canary records in the training split, scored by the model's loss."""
    canaries = draw_canaries(
        inputs.splits.columns,
        inputs.splits.label,
        inputs.settings.canaries,
        np.random.default_rng(inputs.settings.seed),
        include_sensitive=inputs.splits.train_params.include_sensitive,
    )
    audit_train = with_canaries(inputs.splits.train, canaries)
    reused = _reused(inputs, production, audit_train)
    if reused is not None:
        return reused
    run = _charged_run(inputs, audit_train)
    scores = loss_scores(run.result.model, canaries.table)
    audit = _bound(inputs, run, scores, canaries.included)
    canary_mia = membership_inference(
        scores[canaries.included], scores[~canaries.included], _CANARY_MIA_FPR
    )
    probability = (
        predict_proba(run.result.model, inputs.splits.test.features)[:, 1].double().numpy()
    )
    return _finish(
        inputs,
        production,
        run,
        audit,
        mode=AuditMode.SEPARATE_RUN,
        audited=_AUDITED,
        score="black-box: minus the canary's cross-entropy loss under its label",
        extra={
            "canary_mia_auc": canary_mia.auc,
            "audit_model_test_accuracy": binary_metrics(
                inputs.splits.test.labels.numpy(), probability
            ).accuracy,
        },
    )


def _white_box(inputs: AuditInputs, production: PrivacyReport) -> dict[str, Any]:
    """White box: gradient canaries in the clipped sums, scored from the noisy sums."""
    settings = inputs.settings
    parameters = model_parameters(inputs.splits.train_params, inputs.splits.train.width)
    if settings.canaries > parameters:
        raise InputError(
            f"{PARAMS_FILE}: evaluate.audit.canaries: {settings.canaries} gradient canaries "
            f"need as many distinct parameters; the model has {parameters}"
        )
    canaries = GradientCanaries.draw(
        settings.canaries, parameters, np.random.default_rng(settings.seed)
    )
    reused = _reused(inputs, production, inputs.splits.train)
    if reused is not None:
        return reused
    run = _charged_run(inputs, inputs.splits.train, canaries=canaries)
    audit = _bound(inputs, run, canaries.scores(run.dp.noise_multiplier), canaries.included)
    return _finish(
        inputs,
        production,
        run,
        audit,
        mode=AuditMode.WHITE_BOX,
        audited=_AUDITED + _WHITE_BOX_AUDITED,
        score="white-box: summed per-step log-likelihood ratio of the subsampled Gaussian",
        extra={"steps_scored": canaries.steps},
    )


def _disabled(inputs: AuditInputs, production: PrivacyReport) -> dict[str, Any]:
    return {
        "mode": AuditMode.DISABLED.value,
        "epsilon_lower_bound": None,
        "confidence": inputs.settings.confidence,
        "canaries": 0,
        "delta": production.delta,
        "accountant_epsilon": production.epsilon,
        "production_epsilon": production.epsilon,
    }


_AUDITS: Mapping[AuditMode, Callable[[AuditInputs, PrivacyReport], dict[str, Any]]] = (
    MappingProxyType(
        {
            AuditMode.SEPARATE_RUN: _separate_run,
            AuditMode.WHITE_BOX: _white_box,
            AuditMode.DISABLED: _disabled,
        }
    )
)


def _reused(
    inputs: AuditInputs, production: PrivacyReport, train: EncodedTable
) -> dict[str, Any] | None:
    """The result of a finished audit run of this mechanism, the spend read afresh."""
    done = finished_run(
        train,
        inputs.splits.train_params,
        inputs.splits.privacy,
        purpose="audit",
        identity=inputs.identity(),
    )
    if done is None or not (done / AUDIT_RESULT).is_file():
        return None
    reused = json.loads((done / AUDIT_RESULT).read_text(encoding="utf-8"))
    return {
        **reused,
        "production_epsilon": production.epsilon,
        "spent_epsilon_after": inputs.spent(production),
        "reused": True,
    }


def _charged_run(
    inputs: AuditInputs, train: EncodedTable, canaries: GradientCanaries | None = None
) -> ChargedRun:
    """The audit's DP-SGD run: reserved in the ledger before its steps are taken."""
    return charged_train_dp(
        train,
        inputs.splits.val,
        inputs.splits.train_params,
        inputs.splits.privacy,
        dataset_sha256=inputs.splits.record.source_sha256,
        population=inputs.splits.record.population,
        purpose="audit",
        identity=inputs.identity(),
        device=resolve_device(inputs.splits.train_params.device),
        canaries=canaries,
    )


def _bound(
    inputs: AuditInputs, run: ChargedRun, scores: np.ndarray, included: np.ndarray
) -> OneRunAudit:
    """The lower bound from the canaries' scores; fails loudly above the accountant's."""
    settings = inputs.settings
    audit = audit_one_run(
        scores,
        included,
        positive=settings.positive_guesses,
        negative=settings.negative_guesses,
        delta=run.dp.delta,
        confidence=settings.confidence,
    )
    check_bound_below(audit.epsilon_lower_bound, run.result.epsilon, f"audit run {run.run_id}")
    return audit


def _finish(
    inputs: AuditInputs,
    production: PrivacyReport,
    run: ChargedRun,
    audit: OneRunAudit,
    *,
    mode: AuditMode,
    audited: str,
    score: str,
    extra: Mapping[str, object],
) -> dict[str, Any]:
    """The audit's record, kept in the run's directory for reuse; the run marked finished."""
    result = {
        "mode": mode.value,
        "audited": audited,
        "meaning": _MEANING,
        "score": score,
        "epsilon_lower_bound": audit.epsilon_lower_bound,
        "confidence": audit.confidence,
        "canaries": audit.canaries,
        "canaries_included": audit.included,
        "guesses": audit.guesses,
        "correct_guesses": audit.correct,
        "delta": audit.delta,
        "accountant_epsilon": run.result.epsilon,
        "production_epsilon": production.epsilon,
        "run_id": run.run_id,
        "noise_multiplier": run.dp.noise_multiplier,
        "steps": run.result.accounted_steps,
        **extra,
        "spent_epsilon_after": inputs.spent(production),
        "released": False,
    }
    atomic_write_json(run.run_dir / AUDIT_RESULT, result)
    mark_finished(run)
    return result
