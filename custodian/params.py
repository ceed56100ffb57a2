"""params.yaml, one typed section per stage.

Every section rejects unknown keys, so a misspelt knob is an error naming the
key instead of a silent default. Stages read only the sections they declare in
dvc.yaml, and pass plain values on to library code.
"""

from __future__ import annotations

import importlib
from enum import Enum
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

from governance.checks import FindingType
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

    @model_validator(mode="after")
    def _valid_ids(self) -> PolicyParams:
        for license_id in [*self.allowed_licenses, *self.approved_license_refs]:
            if " " in license_id.strip():
                raise ValueError(f"{license_id!r}: list single license ids, not expressions")
            normalize_expression(license_id)
        return self


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
    thresholds: dict[str, float | int] = Field(default_factory=dict)


class PrivacyParams(Section):
    target_epsilon: float = Field(gt=0)
    # None: the largest power of ten at most 1/(10 N); values >= 1/N are refused.
    delta: float | None = Field(default=None, gt=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    accountant: Annotated[str, AfterValidator(_accountant)] = "prv"
    lifetime_epsilon: float = Field(gt=0)


class TrainParams(Section):
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    optimizer: Annotated[str, _one_of("training.trainer:OptimizerKind")] = "sgd"
    momentum: float = Field(default=0.0, ge=0, lt=1)
    patience: int | None = Field(default=3, gt=0)
    precision: Annotated[str, _one_of("training.precision:Precision")] = "bf16"
    device: Annotated[str, _one_of("training.precision:DeviceChoice")] = "auto"
    hidden: list[int] = Field(min_length=1)
    activation: Annotated[str, _one_of("training.model:Activation")] = "relu"
    include_sensitive: bool = False
    checkpoint_every: int = Field(default=200, gt=0)
    seed: int = 0


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
