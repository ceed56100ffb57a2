"""Pre-flight: every charged stage's params checked against the data and the policy.

Runs before the train stage's DP run (and is what ``custodian plan`` prints), so a
configuration that cannot finish (a slice column the data lacks, a delta the policy
refuses, a batch larger than the data, more white-box canaries than model parameters)
is refused with one error listing every problem, before any epsilon is spent. It reads
the splits and the privacy ledger; it writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from audits.gates import GateId
from custodian.params import (
    PARAMS_FILE,
    AuditMode,
    EvaluateParams,
    PolicyParams,
    PrivacyParams,
    TrainParams,
    load_section,
)
from custodian.project import Project
from custodian.services.datasets import load_dataset
from custodian.services.dp_runs import (
    encode_split,
    feature_spec,
    model_parameters,
    privacy_units,
)
from governance.errors import InputError
from governance.provenance import ColumnRole, ColumnType, Provenance
from privacy.accounting import (
    AccountantKind,
    SgdSteps,
    calibrate_noise,
    default_delta,
    epsilon_of,
    validate_delta,
)
from privacy.errors import PrivacyInputError
from privacy.ledger import PrivacyLedger
from training.evaluation import SliceSpec, slice_labels
from training.features import input_columns
from training.trainer import plan_steps

# Poisson sampling amplifies privacy only when each step sees a small share of the
# data; above this rate a run pays nearly full price per step (lower train.batch_size).
MAX_SAMPLE_RATE = 0.1


# Rows each evaluate.audit.mode's charged run trains on (None: no run): a separate run
# adds about half its canary records; white-box canaries are gradients, not rows.
_AUDIT_ROWS: dict[AuditMode, Callable[[int, int], int | None]] = {
    AuditMode.SEPARATE_RUN: lambda rows, canaries: rows + canaries // 2,
    AuditMode.WHITE_BOX: lambda rows, canaries: rows,
    AuditMode.DISABLED: lambda rows, canaries: None,
}


class PreflightFailed(InputError):
    """The params cannot run on this data under this policy (nothing was spent)."""


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One charged DP run a ``dvc repro`` would take."""

    purpose: str  # train | audit
    rows: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float


@dataclass
class Plan:
    dataset: str
    dataset_sha256: str
    population: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[PlannedRun] = field(default_factory=list)
    delta: float | None = None
    accountant: str = "prv"
    spent_epsilon: float | None = None
    total_epsilon: float | None = None
    lifetime_epsilon: float | None = None

    def raise_if_problems(self) -> None:
        if self.problems:
            raise PreflightFailed(
                f"{PARAMS_FILE}: {len(self.problems)} problem(s) before any privacy is spent: "
                + "; ".join(self.problems)
            )

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "population": self.population,
            "ok": not self.problems,
            "problems": self.problems,
            "notes": self.notes,
            "delta": self.delta,
            "accountant": self.accountant,
            "runs": [vars_of(r) for r in self.runs],
            "spent_epsilon": self.spent_epsilon,
            "total_epsilon": self.total_epsilon,
            "lifetime_epsilon": self.lifetime_epsilon,
        }


def vars_of(run: PlannedRun) -> dict:
    return {name: getattr(run, name) for name in PlannedRun.__slots__}


def slice_specs(
    record: Provenance, edges: dict[str, list[float]]
) -> tuple[list[SliceSpec], list[str]]:
    """One spec per sensitive column (its categories, or the edges params give), and problems."""
    sensitive = [c for c in record.columns if c.role is ColumnRole.sensitive]
    names = {c.name for c in sensitive}
    problems = []
    stray = sorted(set(edges) - names)
    if stray:
        problems.append(
            f"evaluate.slices: {stray} are not sensitive columns of the dataset "
            f"(sensitive: {sorted(names)})"
        )
    specs = []
    for column in sensitive:
        if column.name in edges:
            specs.append(SliceSpec(column.name, edges=tuple(edges[column.name])))
        elif column.categories is not None:
            specs.append(SliceSpec(column.name, categories=tuple(column.categories)))
        else:
            problems.append(
                f"evaluate.slices.{column.name}: the sensitive column {column.name!r} is "
                "numeric; give its bucket edges"
            )
    return specs, problems


def preflight(splits: Path) -> Plan:
    """Check every charged stage's params against ``splits`` and the policy; spend nothing."""
    privacy = load_section(PrivacyParams, "privacy")
    train_params = load_section(TrainParams, "train")
    evaluate = load_section(EvaluateParams, "evaluate")
    policy = load_section(PolicyParams, "policy")
    record, train = load_dataset(splits, "train")
    _, test = load_dataset(splits, "test")
    plan = Plan(
        dataset=record.parents[0].name if record.parents else record.name,
        dataset_sha256=record.source_sha256,
        population=record.population,
        accountant=privacy.accountant,
        lifetime_epsilon=privacy.lifetime_epsilon,
    )
    _check_features(plan, record, train_params)
    # Sample rate and delta are over privacy units: people (privacy.unit: person) or rows.
    try:
        encoded = encode_split(splits, "train", train_params.include_sensitive)[1]
        rows = privacy_units(encoded, privacy)
    except InputError as err:
        plan.problems.append(str(err))
        return plan
    _check_audit(plan, train_params, evaluate, encoded.width)
    batch_ok = _check_batch(plan, train_params, rows, splits / "train.csv")
    delta = _check_delta(plan, privacy, policy, rows)
    if privacy.target_epsilon > policy.max_epsilon:
        plan.problems.append(
            f"privacy.target_epsilon {privacy.target_epsilon:g} exceeds policy.max_epsilon "
            f"{policy.max_epsilon:g}: the release gate would fail after the budget is spent"
        )
    _check_slices(plan, record, test, evaluate, policy)
    if batch_ok and delta is not None:
        _plan_spend(plan, privacy, train_params, evaluate, rows, delta)
    return plan


def _check_features(plan: Plan, record: Provenance, params: TrainParams) -> None:
    label = record.column(ColumnRole.label)
    if label is None:
        plan.problems.append(f"dataset {plan.dataset!r}: no column has the role label")
    specs = input_columns(
        [feature_spec(c) for c in record.columns], include_sensitive=params.include_sensitive
    )
    types = {c.name: c.type for c in record.columns}
    for spec in specs:
        if types[spec.name] is ColumnType.datetime:
            plan.problems.append(
                f"column {spec.name!r} holds dates: declare it --time or --exclude it "
                "(dates are not features)"
            )
        elif spec.categories is None and (spec.minimum is None or spec.maximum is None):
            plan.problems.append(
                f"column {spec.name!r} is a feature with neither categories nor bounds "
                "(declare them, or register it --text, --pii or --exclude)"
            )
    if not specs:
        plan.problems.append("no feature columns: declare at least one column as a feature")


def _check_batch(plan: Plan, params: TrainParams, rows: int, source: Path) -> bool:
    if params.batch_size > rows:
        plan.problems.append(
            f"train.batch_size {params.batch_size} exceeds the {rows} rows of {source}"
        )
        return False
    rate = params.batch_size / rows
    if rate > MAX_SAMPLE_RATE:
        plan.problems.append(
            f"train.batch_size {params.batch_size} is a sample rate of {rate:.2f} on "
            f"{rows} training rows; at most {MAX_SAMPLE_RATE} (batch_size <= "
            f"{int(rows * MAX_SAMPLE_RATE)}) for subsampling to amplify privacy"
        )
    return True


def _check_audit(plan: Plan, params: TrainParams, evaluate: EvaluateParams, width: int) -> None:
    # The white-box audit puts each canary on its own model parameter; caught here, not
    # in the evaluate stage after the train run has spent its budget.
    if evaluate.audit.mode is not AuditMode.WHITE_BOX:
        return
    parameters = model_parameters(params, width)
    if evaluate.audit.canaries > parameters:
        plan.problems.append(
            f"evaluate.audit.canaries {evaluate.audit.canaries} exceeds the {parameters} "
            f"parameters of the train.hidden {params.hidden} model on {width} input features: "
            "white-box canaries need distinct parameters (lower it, or widen the model)"
        )


def _check_delta(
    plan: Plan, privacy: PrivacyParams, policy: PolicyParams, rows: int
) -> float | None:
    name = "privacy.delta" if privacy.delta is not None else "privacy.delta (default)"
    try:
        delta = privacy.delta if privacy.delta is not None else default_delta(rows)
        validate_delta(delta, rows)
    except PrivacyInputError as err:
        plan.problems.append(f"{name}: {err}")
        return None
    plan.delta = delta
    if delta > policy.max_delta:
        plan.problems.append(
            f"{name} {delta:g} exceeds policy.max_delta {policy.max_delta:g} "
            f"(the release gate would fail after the budget is spent)"
        )
    return delta


def _check_slices(
    plan: Plan,
    record: Provenance,
    test: pd.DataFrame,
    params: EvaluateParams,
    policy: PolicyParams,
) -> None:
    specs, problems = slice_specs(record, params.slices)
    plan.problems.extend(problems)
    gated = _gateable(test, specs, policy.min_slice_rows)
    if specs and not gated and GateId.WORST_SLICE_GAP not in policy.gate_waivers:
        plan.problems.append(
            f"policy.min_slice_rows {policy.min_slice_rows}: no sensitive attribute has two "
            f"slices that large among the {len(test)} test rows, so the fairness gate would "
            "fail after the budget is spent; lower it, or waive worst_slice_gap in "
            "policy.gate_waivers with a reason"
        )
    if params.min_slice_rows > len(test):
        plan.notes.append(
            f"evaluate.min_slice_rows {params.min_slice_rows} exceeds the {len(test)} test "
            "rows: no slice can be gated (reported as not gateable)"
        )
    for spec in specs:
        counts = slice_labels(test[spec.column], spec).value_counts()
        gateable = int((counts >= params.min_slice_rows).sum())
        if gateable < 2:
            plan.notes.append(
                f"slices of {spec.column!r}: {gateable} of {len(counts)} have "
                f">= {params.min_slice_rows} test rows; its gap is reported as not gateable"
            )


def _gateable(test: pd.DataFrame, specs: list[SliceSpec], min_rows: int) -> list[str]:
    """The sensitive attributes with at least two slices of ``min_rows`` test rows."""
    return [
        spec.column
        for spec in specs
        if int((slice_labels(test[spec.column], spec).value_counts() >= min_rows).sum()) >= 2
    ]


def _plan_spend(
    plan: Plan,
    privacy: PrivacyParams,
    params: TrainParams,
    evaluate: EvaluateParams,
    rows: int,
    delta: float,
) -> None:
    kind = AccountantKind.parse(privacy.accountant)
    planned = [("train", rows)]
    audit_rows = _AUDIT_ROWS[evaluate.audit.mode](rows, evaluate.audit.canaries)
    if audit_rows is not None:
        planned.append(("audit", audit_rows))
    steps: list[SgdSteps] = []
    for purpose, run_rows in planned:
        step_plan = plan_steps(run_rows, params.batch_size, params.epochs)
        sigma = calibrate_noise(
            privacy.target_epsilon, delta, step_plan.sample_rate, step_plan.total_steps, kind
        )
        run = SgdSteps(sigma, step_plan.sample_rate, step_plan.total_steps)
        steps.append(run)
        plan.runs.append(
            PlannedRun(
                purpose=purpose,
                rows=run_rows,
                sample_rate=step_plan.sample_rate,
                steps=step_plan.total_steps,
                noise_multiplier=sigma,
                epsilon=epsilon_of([run], delta, kind),
            )
        )
    history = PrivacyLedger(Project.discover().privacy_ledger_path).history(
        plan.dataset_sha256, plan.population
    )
    plan.spent_epsilon = epsilon_of(history, delta, kind) if history else 0.0
    plan.total_epsilon = epsilon_of([*history, *steps], delta, kind)
    if plan.total_epsilon > privacy.lifetime_epsilon:
        budget = (
            f"population {plan.population!r}"
            if plan.population is not None
            else f"dataset {plan.dataset!r}"
        )
        plan.problems.append(
            f"privacy.lifetime_epsilon: privacy budget exceeded for {budget}: spent "
            f"{plan.spent_epsilon:.3f}, and the {len(steps)} run(s) would bring it to "
            f"{plan.total_epsilon:.3f} > lifetime {privacy.lifetime_epsilon:g}"
        )
