"""The files one stage writes and another reads, as typed models with a JSON Schema each.

A stage builds its model and writes it (:meth:`StageOutput.write`); every reader
parses the file through the same model (:meth:`StageOutput.read`), so a file that
is missing a key, has one too many or a value of the wrong type is one
:class:`InputError` (exit 2) naming the file and the field, never a KeyError deep
in a reader.

Why here, in the shell: the producers span packages that may not import each
other (the train stage combines ``training/`` and ``privacy/``; the check stage
runs ``governance/``), and the main reader, ``audits/``, sits at the bottom beside
``privacy/``, independent of it. Only the shell sees all of them, so the shell
owns the file formats: it parses each file here and hands the parsed, checked
values down as plain data. The parts a domain package already models (a
:class:`~governance.checks.Finding`, a :class:`~governance.checks.CheckConfig`)
are reused as they are. The manifest and the compliance report are models of
``audits/`` already (``audits.manifest.Manifest``, ``audits.compliance.ComplianceReport``).

``schemas/<name>.schema.json`` is each file's JSON Schema (:mod:`custodian.services.schemas`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, NonNegativeInt, ValidationError

from audits.files import atomic_write_json
from governance.checks import CheckConfig, Finding, FindingType, Severity
from governance.errors import InputError
from governance.registry import format_validation_error


class StageOutput(BaseModel):
    """A file of ours: frozen once built, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def read(cls, path: Path) -> Self:
        """The file at ``path`` parsed through this model; InputError naming file and field."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path}: file not found (has its stage run?)") from None
        except OSError as err:
            raise InputError(f"{path}: cannot read: {err.strerror}") from None
        try:
            return cls.model_validate_json(data)
        except ValidationError as err:
            raise InputError(format_validation_error(err, where=str(path))) from None

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.model_dump(mode="json"))


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- split.json


class SplitRows(_Part):
    train: NonNegativeInt
    val: NonNegativeInt
    test: NonNegativeInt


class SplitSummary(StageOutput):
    """``data/split/split.json``: how the split stage divided the dataset."""

    dataset: str
    dataset_sha256: str
    strategy: str
    seed: int
    group_column: str | None
    time_column: str | None
    dropped_rows: NonNegativeInt
    rows: SplitRows


# --------------------------------------------------------------------------- validation.json


class FailedExpectation(_Part):
    expectation: str
    column: str | None
    unexpected_count: int | None


class SuiteResult(_Part):
    dataset: str
    suite: str
    success: bool
    evaluated: NonNegativeInt
    successful: NonNegativeInt
    failed: tuple[FailedExpectation, ...]


class ValidationReport(StageOutput):
    """``reports/validation.json``: every dataset's GX schema suite, and the waivers."""

    success: bool
    suites: tuple[SuiteResult, ...]
    waived: dict[str, str]


# --------------------------------------------------------------------------- checks.json


def blocking(findings: list[Finding], waived: dict[FindingType, str]) -> list[Finding]:
    """Critical findings no waiver lets through."""
    return [f for f in findings if f.severity is Severity.critical and f.type not in waived]


class Proxy(_Part):
    inputs: tuple[str, ...]
    sensitive: tuple[str, ...]
    severity: Severity


class ChecksReport(StageOutput):
    """``reports/checks.json``: the check stage's findings on the pipeline's own splits."""

    dataset_sha256: str
    config: CheckConfig
    waived: dict[FindingType, str]
    # Train against test, and train against val.
    findings: tuple[Finding, ...]
    val_findings: tuple[Finding, ...]
    # Inputs the model trains on that stand in for a sensitive attribute (proxy findings),
    # for the model card and the compliance page.
    proxies: tuple[Proxy, ...]
    # "train_vs_<split>: <where>" -> columns one side lacks or has alone.
    not_compared: dict[str, list[str]]
    # Comparison (train_vs_test, train_vs_val) -> finding type -> its expectation passed.
    expectations: dict[str, dict[FindingType, bool]]

    def all_findings(self) -> list[Finding]:
        return [*self.findings, *self.val_findings]


class FileChecks(StageOutput):
    """What ``custodian check --train A --test B --out F`` writes (no stage reads it)."""

    train: str
    test: str
    findings: tuple[Finding, ...]
    waived: dict[FindingType, str]
    not_compared: dict[str, list[str]]

    def all_findings(self) -> list[Finding]:
        return list(self.findings)


# --------------------------------------------------------------------------- privacy.json


class Budget(_Part):
    lifetime_epsilon: float
    spent_epsilon: float
    # What the population (or dataset) will have spent once the evaluate stage's audit
    # run, planned before the train run, is charged too.
    total_with_audit_epsilon: float | None = None


class Covers(_Part):
    """What the (epsilon, delta) guarantee covers, and what it does not."""

    covered: list[str]
    not_covered: list[str]


class GroupPrivacy(_Part):
    """A record-level guarantee converted to the person with the most rows, so labelled."""

    label: str
    rows: Annotated[int, Field(ge=1)]
    epsilon: float
    delta: float


class PrivacyReport(StageOutput):
    """``reports/privacy.json``: what the released model's training spent, and under what."""

    epsilon: float
    delta: Annotated[float, Field(gt=0, lt=1)]
    noise_multiplier: float
    sample_rate: float
    steps: NonNegativeInt
    accountant: str
    max_grad_norm: float
    precision: str
    clipping: str
    world_size: Annotated[int, Field(ge=1)]
    dataset_sha256: str
    train_sha256: str
    target_epsilon: float
    run_id: str
    epochs: NonNegativeInt
    best_epoch: int | None
    stopped_early: bool
    resumed_from_step: int | None
    budget: Budget
    # The unit of privacy (privacy.unit) and what the guarantee is about.
    unit: Literal["person", "record"]
    neighbouring: str
    people: NonNegativeInt | None
    rows: NonNegativeInt
    max_rows_per_person: NonNegativeInt | None
    population: str | None
    covers: Covers
    group_privacy: GroupPrivacy | None = None


# --------------------------------------------------------------------------- metrics.json


class Metrics(_Part):
    """``training.evaluation.BinaryMetrics`` as written."""

    rows: NonNegativeInt
    positive_rate: float
    accuracy: float
    balanced_accuracy: float | None
    roc_auc: float | None
    f1: float
    log_loss: float


class WorstSlice(_Part):
    attribute: str
    slice: str
    accuracy: float
    gap: float
    gap_attribute: str
    gaps: dict[str, float]


class CalibrationSummary(_Part):
    ece: float
    bins: Annotated[int, Field(ge=2)]


class Baseline(Metrics):
    """The majority class of the test split for every row: what a model must beat."""

    predicts: Literal[0, 1]
    note: str


# A JSON object whose inner shape the evaluate stage's helpers own (intervals, rates,
# gaps): checked here as far as the report's page walks it, an object of objects.
JsonObject = dict[str, JsonValue]
BySlice = dict[str, dict[str, JsonObject]]


class PrivacyAudit(BaseModel):
    """The empirical privacy audit: what every mode reports. Each mode (``separate_run``,
    ``white_box``, ``disabled``) adds its own details, kept as written."""

    model_config = ConfigDict(frozen=True, extra="allow")

    mode: Literal["separate_run", "white_box", "disabled"]
    epsilon_lower_bound: float | None
    confidence: float
    canaries: NonNegativeInt
    delta: float
    accountant_epsilon: float
    production_epsilon: float
    mia_auc: float
    mia_tpr_at_1pct_fpr: float
    mia: str
    # True when a finished audit run with the same mechanism was reused (nothing charged).
    reused: bool = False


class MetricsReport(Metrics, StageOutput):
    """``reports/metrics.json``: utility against the baseline, calibration, slices and their
    fairness, robustness, the non-private reference (if policy allows one), the privacy cost
    and the privacy audit."""

    split: str
    baseline: Baseline
    lift_over_baseline: float
    calibration: CalibrationSummary
    # Attribute -> slice -> that slice's metrics, base rate and intervals.
    slices: BySlice
    slice_min_rows: Annotated[int, Field(ge=1)]
    slice_confidence: float
    worst_slice: WorstSlice | None
    fairness: JsonObject
    # "a & b" -> slice pair -> its metrics.
    intersections: BySlice
    intersection_fairness: JsonObject
    sensitive_values: JsonObject
    robustness: JsonObject
    # Trained (its metrics, ``trained: true``) or not (``trained: false`` and why).
    reference: JsonObject
    privacy_cost: JsonObject
    privacy_audit: PrivacyAudit
