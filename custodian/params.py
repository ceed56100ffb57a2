"""params.yaml, one typed section per stage.

Every section rejects unknown keys, so a misspelt knob is an error naming the
key instead of a silent default. Stages read only the sections they declare in
dvc.yaml, and pass plain values on to library code.
"""

from __future__ import annotations

import importlib
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from audits.gates import GATES, GateId, Limits
from audits.identity import AiActClassification, DataProtection, ModelIdentity
from audits.nist import SubcategoryId, attestable_ids
from audits.trust import KeyRole
from governance.checks import CheckThresholds, FindingType
from governance.errors import InputError
from governance.licenses import IntendedUse, normalize_expression
from governance.provenance import DatasetName
from governance.registry import parse_model
from governance.split import Strategy

PARAMS_FILE = Path("params.yaml")

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=10)]


def _one_of(enum_path: str) -> AfterValidator:
    """Check a value names a member of the enum at ``module:Name``, imported only when checked.

    The enums live in ``training``/``privacy``, which import torch and Opacus:
    seconds that commands not reading these sections must not pay.
    """

    def check(value: str) -> str:
        module, _, name = enum_path.partition(":")
        members: type[Enum] = getattr(importlib.import_module(module), name)
        valid = [member.value for member in members]
        if value not in valid:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, valid))}")
        return value

    return AfterValidator(check)


def _accountant(value: str) -> str:
    from privacy.accounting import AccountantKind
    from privacy.errors import PrivacyInputError

    try:
        return AccountantKind.parse(value).value
    except PrivacyInputError as err:
        raise ValueError(str(err)) from None


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(Section):
    registry: Path = Path("datasets")
    # A registry name, never a path: it becomes a file name under data/.
    dataset: DatasetName


class PolicyParams(Section):
    intended_use: IntendedUse
    allowed_licenses: list[str] = Field(min_length=1)
    approved_license_refs: dict[str, Reason] = Field(default_factory=dict)
    # Who must sign off the current artifacts before `custodian release check` passes;
    # each role by a different person.
    required_signoff_roles: list[KeyRole] = Field(
        default=[KeyRole.PRIVACY_OFFICER, KeyRole.MODEL_OWNER], min_length=1
    )
    # NIST AI RMF subcategories whose signed attestation (custodian attest) a release needs.
    required_attestations: list[SubcategoryId] = Field(default_factory=list)
    # Who the model is for and who answers for it; the data-protection facts; the EU AI Act
    # class. People write these: the page, card and Croissant show them as given.
    model: ModelIdentity
    data_protection: DataProtection
    ai_act_classification: AiActClassification
    # Train the non-private reference model on the data (evaluate stage)? Its metrics are a
    # non-private use of the data, which a "train only with DP" rule forbids.
    allow_nonprivate_reference: bool = False
    # Release gates (custodian report): the limits a run must meet to be released.
    max_epsilon: float = Field(gt=0)
    max_delta: float = Field(gt=0, lt=1)
    min_lift_over_baseline: float = Field(ge=-1, le=1)
    min_roc_auc: float = Field(ge=0, le=1)
    max_worst_slice_gap: float = Field(ge=0, le=1)
    max_gap_over_data: float = Field(ge=0, le=1)
    min_slice_rows: int = Field(ge=1)
    # Gate id -> reason: a failed gate is reported as waived and logged, not fatal.
    gate_waivers: dict[GateId, Reason] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_ids(self) -> PolicyParams:
        for license_id in [*self.allowed_licenses, *self.approved_license_refs]:
            if " " in license_id.strip():
                raise ValueError(f"{license_id!r}: list single license ids, not expressions")
            normalize_expression(license_id)
        return self

    @model_validator(mode="after")
    def _signoff_roles_are_people(self) -> PolicyParams:
        roles = self.required_signoff_roles
        if len(set(roles)) != len(roles):
            raise ValueError("required_signoff_roles: list each role once")
        machines = [role.value for role in roles if not role.is_person]
        if machines:
            raise ValueError(f"required_signoff_roles: {machines[0]!r} is not a person's role")
        return self

    @model_validator(mode="after")
    def _attestations_need_a_person(self) -> PolicyParams:
        wanted = self.required_attestations
        if len(set(wanted)) != len(wanted):
            raise ValueError("required_attestations: list each subcategory once")
        attestable = attestable_ids()
        stray = [item for item in wanted if item not in attestable]
        if stray:
            raise ValueError(
                f"required_attestations: {stray[0]!r} is not a subcategory that needs a "
                "person's attestation (see the catalog's evidence rules)"
            )
        return self

    @model_validator(mode="after")
    def _waivable_gates(self) -> PolicyParams:
        refused = sorted(gate.value for gate in self.gate_waivers if not GATES[gate].waivable)
        if refused:
            raise ValueError(
                f"gate_waivers: {', '.join(refused)} cannot be waived (integrity gates: "
                "evidence that cannot be trusted cannot be accepted either)"
            )
        return self

    def limits(self) -> Limits:
        return Limits(
            max_epsilon=self.max_epsilon,
            max_delta=self.max_delta,
            min_lift_over_baseline=self.min_lift_over_baseline,
            min_roc_auc=self.min_roc_auc,
            max_worst_slice_gap=self.max_worst_slice_gap,
            max_gap_over_data=self.max_gap_over_data,
            min_slice_rows=self.min_slice_rows,
        )


class ValidateParams(Section):
    # dataset name -> reason; a waived suite failure is reported, not fatal.
    waivers: dict[DatasetName, Reason] = Field(default_factory=dict)


class SplitFractions(Section):
    train: float = Field(gt=0, lt=1)
    val: float = Field(ge=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"fractions must sum to 1, got {total:g}")
        return self


class SplitParams(Section):
    strategy: Strategy
    seed: int = Field(ge=0)
    fractions: SplitFractions


S = TypeVar("S", bound="Section")


class CheckParams(Section):
    # Registered dataset names whose rows must not appear in training data.
    references: list[DatasetName] = Field(default_factory=list)
    # Finding type -> reason: a waived critical finding is reported, not fatal.
    waivers: dict[FindingType, Reason] = Field(default_factory=dict)
    # Overrides of the scan's thresholds (governance.checks.CheckConfig fields).
    thresholds: CheckThresholds = Field(default_factory=CheckThresholds)


class PrivacyParams(Section):
    target_epsilon: float = Field(gt=0)
    # None: the largest power of ten at most 1/(10 N); values >= 1/N are refused.
    delta: float | None = Field(default=None, gt=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    accountant: Annotated[str, AfterValidator(_accountant)] = "prv"
    lifetime_epsilon: float = Field(gt=0)
    # person | record; null: person when the dataset declares an identifier, else record
    unit: Annotated[str, _one_of("privacy.unit:PrivacyUnit")] | None = None


class TrainParams(Section):
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    optimizer: Annotated[str, _one_of("training.trainer:OptimizerKind")] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    patience: int | None = Field(default=3, gt=0)
    precision: Annotated[str, _one_of("training.precision:Precision")] = "bf16"
    clipping: Annotated[str, _one_of("training.private_steps:ClippingMode")] = "fast"
    world_size: int = Field(default=1, ge=1)
    device: Annotated[str, _one_of("training.precision:DeviceChoice")] = "auto"
    hidden: list[int] = Field(min_length=1)
    activation: Annotated[str, _one_of("training.model:Activation")] = "relu"
    include_sensitive: bool = False
    checkpoint_every: int = Field(default=200, gt=0)
    seed: int = 0


class AuditMode(StrEnum):
    """How the evaluate stage audits privacy empirically."""

    # A second DP run with the production settings on the training split plus canaries;
    # charged to the dataset's budget like any run, never released.
    SEPARATE_RUN = "separate_run"
    # The same kind of run, with gradient canaries added to its clipped sums instead of
    # canary records, scored from every step's noisy sum (white-box); also charged.
    WHITE_BOX = "white_box"
    # No audit (e.g. for privacy-utility sweeps); the report says so and carries no bound.
    # Not "off": YAML 1.1 reads that as false, e.g. in `dvc exp run -S ...=off`.
    DISABLED = "disabled"


class AuditParams(Section):
    mode: AuditMode = AuditMode.SEPARATE_RUN
    canaries: int = Field(default=1000, ge=1000)
    # Guesses fixed in advance: "included" for the k+ highest scores, "excluded" for the
    # k- lowest; the bound is only valid if they are not tuned on the scores.
    positive_guesses: int = Field(default=100, ge=0)
    negative_guesses: int = Field(default=100, ge=0)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _guesses_fit(self) -> AuditParams:
        guesses = self.positive_guesses + self.negative_guesses
        if not 0 < guesses <= self.canaries:
            raise ValueError(
                f"positive_guesses + negative_guesses must be in 1..canaries, got {guesses}"
            )
        return self


class RobustnessParams(Section):
    seed: int = Field(default=0, ge=0)
    # Gaussian noise, standard deviation as a share of each numeric feature's declared range.
    feature_noise: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=list)
    # Share of each nullable feature's values blanked.
    missing: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=list)


class EvaluateParams(Section):
    calibration_bins: int = Field(default=10, ge=2)
    # Slices smaller than this are reported, marked small, but cannot be the worst slice.
    min_slice_rows: int = Field(default=30, ge=1)
    # Confidence of the Wilson intervals on every slice's accuracy, TPR and FPR.
    slice_confidence: float = Field(default=0.95, gt=0, lt=1)
    # Numeric sensitive column -> increasing bucket edges. Categorical ones are sliced by
    # their declared categories; a numeric one without edges here is an error.
    slices: dict[str, list[float]] = Field(default_factory=dict)
    robustness: RobustnessParams = RobustnessParams()
    audit: AuditParams = AuditParams()


def load_section(model: type[S], key: str, path: Path = PARAMS_FILE) -> S:
    if not path.is_file():
        raise InputError(f"{path}: file not found (run from the project root)")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(content, dict) or key not in content:
        raise InputError(f"{path}: {key}: section missing")
    return parse_model(model, content[key], where=str(path), prefix=key)
