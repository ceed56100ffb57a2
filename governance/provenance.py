"""Provenance records: where a dataset came from, under what terms, and what it holds.

These models cross every boundary of the pipeline (``.dvc`` meta, stage
outputs, reports), so they validate on construction and reject unknown keys.
``provenance_json_schema()`` exports their JSON Schema.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from governance.licenses import Obligation, normalize_expression

SCHEMA_VERSION = 1

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
DatasetName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
# The data subjects a dataset is about (e.g. ``rand-hie-participants``).
PopulationName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
SpdxExpression = Annotated[str, AfterValidator(normalize_expression)]

_URI = re.compile(r"^(package|file|https?|s3|gs|azure|ssh|dvc|stage):.+|^[^:]+$")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class ColumnRole(StrEnum):
    identifier = "identifier"
    sensitive = "sensitive"
    label = "label"
    time = "time"
    feature = "feature"
    # A column that encodes the label (or is otherwise unusable as a feature);
    # kept in the data for audit, never trained on.
    excluded = "excluded"


class ColumnType(StrEnum):
    integer = "integer"
    number = "number"
    boolean = "boolean"
    string = "string"
    datetime = "datetime"
    # Free text (notes, comments): its values are never recorded and it is never a
    # model feature (no text encoder exists); the PII check still scans it.
    text = "text"


# Columns whose values never leave the data: no categories or range are recorded
# for them, only counts and a format (see ``ColumnSpec.format``).
UNRECORDED_PII = frozenset({"direct_identifier", "contact"})


class PiiCategory(StrEnum):
    """Personal-data categories, after GDPR Art. 4 and the Art. 9 special categories."""

    direct_identifier = "direct_identifier"
    pseudonymous_identifier = "pseudonymous_identifier"
    contact = "contact"
    health = "health"
    racial_or_ethnic_origin = "racial_or_ethnic_origin"
    sex_or_gender = "sex_or_gender"
    age = "age"
    financial = "financial"
    location = "location"
    biometric = "biometric"
    other = "other"


class ColumnSpec(Frozen):
    name: Annotated[str, StringConstraints(min_length=1)]
    type: ColumnType
    role: ColumnRole = ColumnRole.feature
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    categories: list[str | int | float | bool] | None = None
    pii: list[PiiCategory] = Field(default_factory=list)
    description: str | None = None
    # For columns whose values are not recorded (free text, identifiers, declared
    # personal data): how many distinct values, and their shape ("A999", "9{6}").
    distinct: int | None = Field(default=None, ge=0)
    format: str | None = None
    # Why an excluded column is not trained on (e.g. it composes the label, or
    # stands in for a sensitive attribute); reviewers and the checks read it.
    reason: Annotated[str, StringConstraints(min_length=1)] | None = None

    @model_validator(mode="after")
    def _reason_only_for_excluded(self) -> ColumnSpec:
        if self.reason is not None and self.role is not ColumnRole.excluded:
            raise ValueError(f"column {self.name!r}: only excluded columns record a reason")
        return self

    @model_validator(mode="after")
    def _values_not_recorded(self) -> ColumnSpec:
        if self.values_private and self.categories is not None:
            raise ValueError(
                f"column {self.name!r}: free text and declared personal data record no categories"
            )
        if self.values_private and (self.minimum is not None or self.maximum is not None):
            raise ValueError(
                f"column {self.name!r}: free text and declared personal data record no range"
            )
        return self

    @property
    def values_private(self) -> bool:
        """Free text or declared direct personal data: no value may be written anywhere."""
        return self.type is ColumnType.text or bool(UNRECORDED_PII & set(self.pii))

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ColumnSpec:
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(
                f"column {self.name!r}: minimum {self.minimum} > maximum {self.maximum}"
            )
        return self


class ParentRef(Frozen):
    name: DatasetName
    sha256: Sha256
    license: SpdxExpression


class Encryption(Frozen):
    """How a dataset's files are stored at rest: sealed under the data key ``key_id`` names.

    The key itself is never recorded; ``sha256`` of the record stays the
    hash of the plaintext, checked after decryption.
    """

    algorithm: Literal["AES-256-GCM"] = "AES-256-GCM"
    format: Literal[1] = 1
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class Provenance(Frozen):
    """Everything a reviewer needs to know about where a dataset came from."""

    schema_version: int = SCHEMA_VERSION
    name: DatasetName
    title: str | None = None
    source: Annotated[str, StringConstraints(min_length=1)]
    source_version: str | None = None
    citation: str | None = None
    license: SpdxExpression
    retrieved_at: AwareDatetime
    sha256: Sha256
    rows: int = Field(ge=0)
    columns: list[ColumnSpec] = Field(min_length=1)
    pii_categories: list[PiiCategory] = Field(default_factory=list)
    intended_use: str | None = None
    restrictions: list[str] = Field(default_factory=list)
    obligations: list[Obligation] = Field(default_factory=list)
    parents: list[ParentRef] = Field(default_factory=list)
    produced_by: str | None = None
    # Who the rows are about: datasets naming the same population share one lifetime
    # privacy budget (privacy.ledger). Derived splits and new versions inherit it.
    population: PopulationName | None = None
    # Set for a dataset registered with ``custodian data add --encrypt``; its
    # derived datasets inherit it and are sealed under the same key.
    encryption: Encryption | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Provenance:
        if not _URI.match(self.source):
            raise ValueError(f"source {self.source!r} is not a URI or path")
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column name(s): {', '.join(dupes)}")
        for role in (ColumnRole.identifier, ColumnRole.label, ColumnRole.time):
            holders = [c.name for c in self.columns if c.role is role]
            if len(holders) > 1:
                raise ValueError(f"at most one {role} column, got {', '.join(holders)}")
        if self.parents and not self.produced_by:
            raise ValueError("a derived dataset (with parents) must name produced_by")
        return self

    def column(self, role: ColumnRole) -> str | None:
        """The single column with ``role`` (identifier, label or time), if declared."""
        return next((c.name for c in self.columns if c.role is role), None)

    @property
    def source_sha256(self) -> str:
        """The hash of the dataset this one was derived from (its own, if not derived).

        Privacy budgets and reports are keyed by it: a re-split of the same
        records is the same data.
        """
        return self.parents[0].sha256 if self.parents else self.sha256

    def columns_with(self, role: ColumnRole) -> list[str]:
        return [c.name for c in self.columns if c.role is role]

    def to_json(self) -> dict[str, Any]:
        content = self.model_dump(mode="json")
        # Absent rather than null for plaintext data: records written before
        # encryption existed (and their hashes in dvc.lock) stay unchanged.
        if self.encryption is None:
            del content["encryption"]
        if self.population is None:
            del content["population"]
        return content


class SourceDeclaration(Frozen):
    """A dataset shipped inside an installed package: provenance known before retrieval.

    Lives in ``datasets/<name>.yaml``. ``sha256`` pins the content: a changed
    upstream file is refused at ingest rather than silently trained on. Because
    the content is pinned, ``retrieved_at`` is when it was first retrieved and
    pinned, which keeps the ingested record identical on every machine.
    """

    name: DatasetName
    title: str | None = None
    source: Annotated[str, StringConstraints(pattern=r"^package://[A-Za-z0-9_]+/.+")]
    citation: str | None = None
    license: SpdxExpression
    retrieved_at: AwareDatetime
    sha256: Sha256
    rows: int = Field(ge=0)
    columns: list[ColumnSpec] = Field(min_length=1)
    pii_categories: list[PiiCategory] = Field(default_factory=list)
    intended_use: str | None = None
    restrictions: list[str] = Field(default_factory=list)
    population: PopulationName | None = None

    def provenance(self, source_version: str) -> Provenance:
        return Provenance(source_version=source_version, **self.model_dump())


def provenance_json_schema() -> dict[str, Any]:
    return Provenance.model_json_schema()
