"""What a scan is told about the data, and every threshold it decides with."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Score = Annotated[float, Field(ge=0.5, le=1.0)]


class CheckConfig(BaseModel):
    """Column roles and thresholds for :func:`governance.checks.scan`.

    Identifier and time columns are never compared as features; excluded
    columns (e.g. declared label-encoding columns that are not trained on) are
    ignored by every check; declared PII columns are not reported as PII.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str | None = None
    id_column: str | None = None
    time_column: str | None = None
    pii_columns: tuple[str, ...] = ()
    exclude_columns: tuple[str, ...] = ()
    # Declared sensitive attributes: evaluated, not trained on, so they are not
    # model inputs for the multi-column leakage model, and ``proxy`` looks for
    # inputs that stand in for them.
    sensitive_columns: tuple[str, ...] = ()

    # Rows are compared after rounding numbers to this many decimal places, so
    # that 0.1 + 0.2 and 0.3 (or a value re-exported with fewer digits) match.
    float_decimals: Annotated[int, Field(ge=0, le=15)] = 6
    max_rows_listed: Annotated[int, Field(ge=0)] = 1000
    seed: int = 0
    # Categorical features with more distinct values than this share of train
    # rows are identifiers in disguise (ticket numbers, emails): no per-value
    # rule generalises from them, and requiring them to match would make every
    # row unique, so target-leakage and near-duplicate search ignore them.
    identifier_like_fraction: Fraction = 0.5

    # Duplicates stay critical unless the space of distinct rows is small: at
    # least ``chance_floor`` of train rows repeat one another, and the overlap is
    # within ``chance_factor`` of that share, which is what an independent sample
    # would show (Good-Turing). Below the floor, repeats are copies, not chance.
    exact_duplicate_chance_factor: Annotated[float, Field(ge=1.0)] = 2.0
    exact_duplicate_chance_floor: Fraction = 0.05

    # Numeric near-duplicates: the tolerance is set from the distances of
    # sampled train rows to their nearest other train row (standardised by train
    # std), extrapolated so that an ordinary new row falls within it of some
    # train row at about this rate (the false-alarm rate per row).
    near_duplicate_background_rate: Annotated[float, Field(gt=0.0, lt=0.01)] = 1e-5
    near_duplicate_sample: Annotated[int, Field(ge=100)] = 5000
    near_duplicate_critical_fraction: Fraction = 0.01
    # Text near-duplicates: MinHash/LSH on word sets, verified by exact Jaccard.
    text_min_words: Annotated[int, Field(ge=1)] = 5
    text_jaccard: Fraction = 0.8
    text_minhash_bands: Annotated[int, Field(ge=1, le=64)] = 10
    text_minhash_rows: Annotated[int, Field(ge=1, le=16)] = 4

    temporal_critical_fraction: Fraction = 0.01

    # Single-feature predictive power: ROC AUC (binary label), balanced
    # accuracy (multiclass) or |Spearman rho| (numeric label).
    target_leakage_critical: Score = 0.98
    target_leakage_warning: Score = 0.95
    target_leakage_max_rows: Annotated[int, Field(ge=100)] = 200_000
    max_classes: Annotated[int, Field(ge=2)] = 20

    # Model-based checks (multi-column target leakage, proxies): boosted trees
    # on at most ``model_max_rows`` sampled rows, cross-fitted in two folds.
    # Scores are ROC AUC (binary), balanced accuracy (multiclass) or R^2.
    model_max_rows: Annotated[int, Field(ge=200)] = 10_000
    # A plausible model of a real outcome rarely comes this close to perfect;
    # a label written as a function of its inputs does.
    target_leakage_model_critical: Score = 0.995
    target_leakage_model_warning: Score = 0.98
    # The most columns a minimal leaking (or proxy) set may name.
    max_set_size: Annotated[int, Field(ge=1, le=12)] = 6
    # A rule is stated when it gives the label on at least this share of rows.
    rule_agreement: Fraction = 0.99
    proxy_critical: Score = 0.99
    proxy_warning: Score = 0.95

    pii_min_fraction: Fraction = 0.001
    # Fixed-width whole numbers (5+ digits) with at least this share of
    # distinct values are identifiers (a person's rows share one).
    identifier_column_fraction: Fraction = 0.25
    pii_critical_fraction: Fraction = 0.5

    def features(self, columns: Iterable[str]) -> list[str]:
        """The columns compared as features: those without a role that are not excluded."""
        roles = {self.label, self.id_column, self.time_column, *self.exclude_columns}
        return [c for c in columns if c not in roles]

    def missing_columns(self, frames: Mapping[str, Collection[str]]) -> list[str]:
        """A problem for each declared column absent from a frame (named as errors name it)."""
        declared = {
            "label": [self.label],
            "id_column": [self.id_column],
            "time_column": [self.time_column],
            "pii_columns": list(self.pii_columns),
            "exclude_columns": list(self.exclude_columns),
            "sensitive_columns": list(self.sensitive_columns),
        }
        return [
            f"{field} {column!r} is not a column of {where}"
            for field, columns in declared.items()
            for column in columns
            if column is not None
            for where, present in frames.items()
            if column not in present
        ]

    @model_validator(mode="after")
    def _consistent(self) -> CheckConfig:
        problems = []
        roles = [c for c in (self.label, self.id_column, self.time_column) if c is not None]
        if len(set(roles)) != len(roles):
            problems.append(f"label, id_column and time_column must differ (got {roles})")
        for name in self.exclude_columns:
            if name in roles:
                problems.append(f"exclude_columns lists {name!r}, which has a role")
        for name in self.sensitive_columns:
            if name in roles:
                problems.append(f"sensitive_columns lists {name!r}, which has a role")
        pairs = (
            ("target_leakage_warning", "target_leakage_critical"),
            ("target_leakage_model_warning", "target_leakage_model_critical"),
            ("proxy_warning", "proxy_critical"),
        )
        for warning, critical in pairs:
            if getattr(self, warning) > getattr(self, critical):
                problems.append(f"{warning} must not exceed {critical}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Fields that say what the data is, not how strictly to judge it.
_ROLE_FIELDS = frozenset(
    {"label", "id_column", "time_column", "pii_columns", "exclude_columns", "sensitive_columns"}
)

# params.yaml ``check.thresholds``: every CheckConfig field but the roles, each
# with its type and bounds; unknown keys are rejected when params are read.
CheckThresholds = create_model(
    "CheckThresholds",
    __config__=ConfigDict(frozen=True, extra="forbid"),
    **{
        name: (info.annotation, info)
        for name, info in CheckConfig.model_fields.items()
        if name not in _ROLE_FIELDS
    },
)
