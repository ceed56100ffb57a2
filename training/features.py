"""Turn a split's frame into model tensors, using only the declared schema.

Differential privacy covers what the trainer *learns* from the training data, but any
statistic computed from that data outside the DP mechanism is a separate, unprotected
release. Standardising with the training split's means and standard deviations would be
such a release (the scaling constants ship inside every model that uses them). So the
encoding here depends on the data only row by row, never on aggregates:

- numeric columns are scaled to ``[0, 1]`` by their *declared* ``minimum``/``maximum``
  and clipped to that range; the schema's bounds are treated as public metadata (the data
  steward must make sure they are, e.g. domain limits rather than the observed extremes);
- columns with declared ``categories`` are one-hot encoded in the declared order;
- a column declared ``nullable`` gets a ``<name>__missing`` indicator, and its missing
  values encode as 0.

The feature layout is a function of the schema alone, so train, validation and test
encode to the same columns whatever values they hold. Identifier, time, label and excluded
columns are never features; sensitive columns are features only when asked for. Free text
(``free_text``) is never a feature: no text encoder exists, and one-hot encoding its values
would copy them, personal data included, into the model's feature names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import torch

from training.errors import TrainingInputError

__all__ = [
    "ColumnRole",
    "EncodedTable",
    "FeatureSpec",
    "encode_table",
    "feature_names",
    "input_columns",
]

Category = str | int | float | bool

# How many offending row positions an error message lists. Errors name rows, never values:
# messages end up in logs, and the values are the sensitive data itself.
_QUOTED_ROWS = 3


class ColumnRole(StrEnum):
    """A column's role, as the data's provenance declares it."""

    IDENTIFIER = "identifier"
    SENSITIVE = "sensitive"
    LABEL = "label"
    TIME = "time"
    FEATURE = "feature"
    EXCLUDED = "excluded"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What the schema declares about one column; the caller copies it from provenance.

    ``categories`` (if given) makes the column categorical; otherwise it is numeric and
    needs both bounds when it is used as a feature.
    """

    name: str
    role: ColumnRole = ColumnRole.FEATURE
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[Category, ...] | None = None
    nullable: bool = False
    free_text: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.name, str) or not self.name:
            problems.append("name must be a non-empty string")
        try:
            object.__setattr__(self, "role", ColumnRole(self.role))
        except ValueError:
            valid = ", ".join(role.value for role in ColumnRole)
            problems.append(f"unknown role {self.role!r} (valid: {valid})")
        for bound in (self.minimum, self.maximum):
            if bound is not None and not _is_finite_number(bound):
                problems.append(f"bounds must be finite numbers, got {bound!r}")
        if self.categories is not None:
            categories = tuple(self.categories)
            object.__setattr__(self, "categories", categories)
            if not categories:
                problems.append("categories, when declared, must not be empty")
            if len(set(map(_category_key, categories))) != len(categories):
                problems.append(f"categories must be distinct, got {list(categories)}")
        if problems:
            raise TrainingInputError(f"column {self.name!r}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class EncodedTable:
    """Model inputs for one split: ``features`` (float32, rows x width), ``labels`` (int64),
    ``people`` (int64 person codes, or None)."""

    features: torch.Tensor
    labels: torch.Tensor
    feature_names: tuple[str, ...]
    # The person each row is about (the identifier column factorised), for person-level
    # DP; None when the dataset declares no identifier.
    people: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        """The number of feature columns."""
        return len(self.feature_names)


def input_columns(
    columns: Sequence[FeatureSpec], *, include_sensitive: bool = False
) -> tuple[FeatureSpec, ...]:
    """The columns that become features, in schema order."""
    allowed = {ColumnRole.FEATURE}
    if include_sensitive:
        allowed.add(ColumnRole.SENSITIVE)
    return tuple(spec for spec in columns if spec.role in allowed and not spec.free_text)


def feature_names(
    columns: Sequence[FeatureSpec], *, include_sensitive: bool = False
) -> tuple[str, ...]:
    """The encoded feature layout, from the schema alone."""
    names: list[str] = []
    for spec in input_columns(columns, include_sensitive=include_sensitive):
        if spec.categories is None:
            names.append(spec.name)
        else:
            names.extend(f"{spec.name}={category}" for category in spec.categories)
        if spec.nullable:
            names.append(f"{spec.name}__missing")
    return tuple(names)


def encode_table(
    frame: pd.DataFrame,
    columns: Sequence[FeatureSpec],
    label: str,
    *,
    include_sensitive: bool = False,
    source: str = "frame",
) -> EncodedTable:
    """Encode ``frame`` by the schema ``columns`` with binary label column ``label``.

    ``source`` (e.g. the CSV's path) names the input in error messages.
    """
    specs = _check_schema(columns, label, include_sensitive, source)
    _check_present(frame, [*(spec.name for spec in specs), label], source)
    matrix = np.concatenate(
        [_encode_column(frame[spec.name], spec, source) for spec in specs], axis=1
    )
    label_spec = next(spec for spec in columns if spec.name == label)
    return EncodedTable(
        features=torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)),
        labels=torch.from_numpy(_encode_label(frame[label], label_spec, source)),
        feature_names=feature_names(columns, include_sensitive=include_sensitive),
        people=_person_codes(frame, columns, source),
    )


def _person_codes(
    frame: pd.DataFrame, columns: Sequence[FeatureSpec], source: str
) -> torch.Tensor | None:
    """The identifier column factorised (codes only: no identifier value leaves here), -1
    where it is missing (person-level training refuses those); None without an identifier
    column in the schema or the frame."""
    identifier = next((spec.name for spec in columns if spec.role is ColumnRole.IDENTIFIER), None)
    if identifier is None or identifier not in frame.columns:  # e.g. schema-drawn canaries
        return None
    codes, _ = pd.factorize(frame[identifier], use_na_sentinel=True)
    return torch.from_numpy(codes.astype(np.int64))


def _check_schema(
    columns: Sequence[FeatureSpec], label: str, include_sensitive: bool, source: str
) -> tuple[FeatureSpec, ...]:
    problems = []
    names = [spec.name for spec in columns]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.append(f"columns declared more than once: {duplicated}")
    if label not in names:
        problems.append(f"label column {label!r} is not in the schema")
    specs = input_columns(columns, include_sensitive=include_sensitive)
    if label in {spec.name for spec in specs}:
        problems.append(f"label column {label!r} is declared as a feature")
    for spec in specs:
        if spec.categories is None and (spec.minimum is None or spec.maximum is None):
            problems.append(
                f"numeric column {spec.name!r} needs a declared minimum and maximum "
                "(public bounds used for scaling); declare them or its categories"
            )
        elif spec.categories is None and spec.minimum >= spec.maximum:
            problems.append(
                f"column {spec.name!r} declares an empty range "
                f"[{spec.minimum}, {spec.maximum}]; exclude it or widen the range"
            )
    if not specs:
        problems.append("no feature columns: declare at least one column with role 'feature'")
    if problems:
        raise TrainingInputError(f"{source}: " + "; ".join(problems))
    return specs


def _check_present(frame: pd.DataFrame, names: list[str], source: str) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise TrainingInputError(f"{source}: missing columns {missing}")


def _encode_column(series: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    missing = series.isna().to_numpy()
    if missing.any() and not spec.nullable:
        raise TrainingInputError(
            f"{source}: column {spec.name!r} has missing values in {_rows(missing)} but "
            "is not declared nullable"
        )
    if spec.categories is None:
        encoded = _scaled(series, spec, source)[:, None]
    else:
        encoded = _one_hot(series, spec, source)
    if spec.nullable:
        encoded = np.concatenate([encoded, missing[:, None].astype(np.float64)], axis=1)
    return encoded


def _scaled(series: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    """Values scaled by the declared bounds to [0, 1] and clipped; missing values become 0."""
    values = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    present = series.notna().to_numpy()
    not_numbers = present & np.isnan(values)
    if not_numbers.any():
        raise TrainingInputError(
            f"{source}: numeric column {spec.name!r} has non-numeric values in {_rows(not_numbers)}"
        )
    if np.isinf(values).any():
        raise TrainingInputError(
            f"{source}: column {spec.name!r} has infinite values in {_rows(np.isinf(values))}"
        )
    assert spec.minimum is not None and spec.maximum is not None  # checked in _check_schema
    scaled = (values - spec.minimum) / (spec.maximum - spec.minimum)
    return np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0)


def _one_hot(series: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    assert spec.categories is not None  # the caller chose the categorical encoding
    codes = _category_codes(series, spec.categories)
    unknown = series.notna().to_numpy() & np.isnan(codes)
    if unknown.any():
        raise TrainingInputError(
            f"{source}: column {spec.name!r} has values outside its declared categories "
            f"{list(spec.categories)} in {_rows(unknown)}"
        )
    encoded = np.zeros((len(series), len(spec.categories)))
    rows = np.flatnonzero(~np.isnan(codes))
    encoded[rows, codes[rows].astype(np.int64)] = 1.0
    return encoded


def _category_codes(series: pd.Series, categories: Sequence[Category]) -> np.ndarray:
    """Each value's position in ``categories`` (NaN where missing or undeclared).

    Numbers compare by value (the CSV reader turns an integer column with gaps into
    floats, and booleans into 0/1 compare equal to declared 0/1); text compares exactly.
    """
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        lookup = {float(c): i for i, c in enumerate(categories) if _is_number(c)}
        values = series.astype("float64")
    else:
        lookup = {c: i for i, c in enumerate(categories) if isinstance(c, str)}
        values = series
    return values.map(lookup).astype("float64").to_numpy()


def _encode_label(series: pd.Series, spec: FeatureSpec, source: str) -> np.ndarray:
    """Class indices 0/1: declared categories in order, or the values 0 and 1 themselves."""
    categories: tuple[Category, ...] = spec.categories if spec.categories is not None else (0, 1)
    if len(categories) != 2:
        raise TrainingInputError(
            f"{source}: label column {spec.name!r} declares {len(categories)} categories "
            f"{list(categories)}; the trainer is a binary classifier and needs exactly 2"
        )
    invalid = series.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        invalid = invalid | np.isinf(series.astype("float64").to_numpy())
    if invalid.any():
        raise TrainingInputError(
            f"{source}: label column {spec.name!r} has missing or infinite values in "
            f"{_rows(invalid)}"
        )
    codes = _category_codes(series, categories)
    outside = np.isnan(codes)
    if outside.any():
        raise TrainingInputError(
            f"{source}: label column {spec.name!r} must be binary with values "
            f"{list(categories)}; other values in {_rows(outside)}"
        )
    return codes.astype(np.int64)


def _rows(mask: np.ndarray) -> str:
    """``N rows (e.g. rows [i, j, k])``: 0-based positions in the frame as read."""
    positions = np.flatnonzero(mask)
    shown = ", ".join(str(int(i)) for i in positions[:_QUOTED_ROWS])
    return f"{len(positions)} rows (e.g. rows [{shown}])"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.number)


def _is_finite_number(value: object) -> bool:
    return _is_number(value) and not isinstance(value, bool) and math.isfinite(float(value))


def _category_key(value: Category) -> tuple[str, object]:
    # 1, 1.0 and True are one category when the column is read as numbers.
    return ("number", float(value)) if _is_number(value) else ("text", value)
