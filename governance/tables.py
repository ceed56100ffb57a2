"""Reading tabular files strictly, and describing their columns.

pandas is forgiving by default (it renames duplicate headers, pads ragged
rows, guesses encodings); a governed pipeline must refuse instead, naming the
file and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from governance.checks.pii import pii_kinds
from governance.errors import InputError
from governance.provenance import ColumnRole, ColumnSpec, ColumnType, PiiCategory

# Few enough distinct values to enumerate as allowed categories in the schema.
MAX_CATEGORIES = 12


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_csv_bytes(data: bytes, *, where: str) -> pd.DataFrame:
    """Parse CSV bytes into a frame, refusing anything ambiguous. ``where`` names the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise InputError(f"{where}: file is empty")
    header_line = text.splitlines()[0]
    header = next(csv.reader([header_line]))
    if len(header) < 2:
        raise InputError(
            f"{where}: header has {len(header)} column; expected a comma-separated file"
        )
    blank = [i for i, name in enumerate(header) if not name.strip()]
    if blank:
        raise InputError(f"{where}: header: column {blank[0] + 1} has no name")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"{where}: header: duplicate column name {name!r}")
        seen.add(name)
    _check_row_lengths(text, len(header), where=where)
    frame = pd.read_csv(io.StringIO(text))
    if frame.empty:
        raise InputError(f"{where}: header only, no data rows")
    _check_magnitudes(frame, where=where)
    return frame


def _check_magnitudes(frame: pd.DataFrame, *, where: str) -> None:
    """Refuse numbers no float64 or int64 column can hold: ``inf``, ``1e400``, 30-digit integers.

    pandas reads the first two as infinity and the last as text, so without this
    check a typo would become a silently infinite feature or a numeric column
    silently turned into strings. Missing values (empty cells, ``NA``) stay missing.
    """
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_bool_dtype(series):
            continue
        if pd.api.types.is_numeric_dtype(series):
            bad = np.isinf(series.to_numpy(dtype=float, na_value=np.nan))
            what = "infinite or beyond the float64 range"
        else:
            present = series.notna().to_numpy()
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            parsed = present & ~np.isnan(numbers)
            if not parsed[present].all():
                continue  # a text column; numbers among text are the data's business
            bad = parsed & (np.abs(numbers) >= 2.0**63)
            what = "beyond the 64-bit integer range"
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{where}: column {name!r}: {int(bad.sum())} value(s) {what} "
                f"(first on line {first + 2})"
            )


def _check_row_lengths(text: str, width: int, *, where: str) -> None:
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if row and len(row) != width:
            raise InputError(f"{where}: line {line_no}: {len(row)} fields, header has {width}")


@dataclass(frozen=True)
class Inferred:
    """The observed schema, and what was recognised in it (for the data steward to read)."""

    columns: list[ColumnSpec]
    notes: list[str]


def infer_columns(
    frame: pd.DataFrame,
    roles: dict[str, ColumnRole],
    *,
    text: Collection[str] = (),
    pii: Collection[str] = (),
) -> Inferred:
    """Describe each column (type, nullability, range, categories) as observed.

    The result is a starting point for the declared schema: the data steward
    reviews it, and the expectation suite is generated from it. What it records
    is written to git-tracked metadata, so values of free text, identifiers and
    personal data are never recorded: those keep a distinct count and a format.
    ``text`` and ``pii`` declare such columns; others are recognised by their
    cardinality, length and patterns.
    """
    declared = [*roles, *text, *pii]
    unknown = sorted(set(declared) - set(frame.columns))
    if unknown:
        raise InputError(f"column role names unknown column(s): {', '.join(unknown)}")
    for name in sorted(set(text) & set(pii)):
        raise InputError(f"column {name!r}: declared both free text and personal data")
    for name in sorted(set(text) | set(pii)):
        if roles.get(name) in (ColumnRole.label, ColumnRole.sensitive, ColumnRole.time):
            raise InputError(
                f"column {name!r}: a {roles[name]} column needs its values; "
                "it cannot be free text or personal data"
            )
    for name, role in roles.items():
        if role is ColumnRole.label:
            _check_label(frame[name])
    columns, notes = [], []
    for name in frame.columns:
        spec, note = _infer(frame[name], roles.get(name), name in text, name in pii)
        columns.append(spec)
        if note:
            notes.append(f"column {name!r}: {note}")
    return Inferred(columns, notes)


def _infer(
    series: pd.Series, role: ColumnRole | None, text: bool, pii: bool
) -> tuple[ColumnSpec, str | None]:
    nullable = bool(series.isna().any())
    values = series.dropna()
    if pii:
        return _unrecorded(series, role or ColumnRole.excluded, ColumnType.string, pii=True), None
    if text:
        return _unrecorded(series, role or ColumnRole.excluded, ColumnType.text), None
    if role is ColumnRole.identifier:
        kind = ColumnType.string if not pd.api.types.is_numeric_dtype(series) else _numeric(values)
        return _unrecorded(series, role, kind), None
    textual = not pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if textual and len(values) and _iso_dates(values.astype(str)):
        return ColumnSpec(
            name=series.name,
            type=ColumnType.datetime,
            role=role or ColumnRole.feature,
            nullable=nullable,
        ), None
    if role is None and _identifier_like(values):
        spec = _unrecorded(
            series,
            ColumnRole.excluded,
            ColumnType.string if textual else _numeric(values),
            reason="recognised as an identifier: mostly distinct values of one format; "
            "declare it with --identifier or keep it excluded",
        )
        return spec, f"looks like an identifier ({spec.format}); excluded, values not recorded"
    if textual and role is None and _free_text(values.astype(str)):
        spec = _unrecorded(series, ColumnRole.excluded, ColumnType.text)
        return spec, "recognised as free text; never a feature, values not recorded"
    if textual and len(values) and _pii_matches(values.astype(str)):
        spec = ColumnSpec(
            name=series.name,
            type=ColumnType.string,
            role=role or ColumnRole.feature,
            nullable=nullable,
            distinct=int(values.nunique()),
        )
        return spec, (
            "some values look like personal data; its values are not recorded. "
            "Declare it --text or --pii (the checks stop a pipeline that trains on it)"
        )
    return _describe(series, role or ColumnRole.feature), None


def _numeric(values: pd.Series) -> ColumnType:
    numbers = values.to_numpy(dtype=float)
    return ColumnType.integer if bool(np.all(np.mod(numbers, 1) == 0)) else ColumnType.number


def _unrecorded(
    series: pd.Series,
    role: ColumnRole,
    kind: ColumnType,
    *,
    pii: bool = False,
    reason: str | None = None,
) -> ColumnSpec:
    values = series.dropna()
    if role is ColumnRole.excluded and reason is None:
        reason = (
            "declared personal data: never trained on" if pii else "free text: never trained on"
        )
    return ColumnSpec(
        name=series.name,
        type=kind,
        role=role,
        nullable=bool(series.isna().any()),
        pii=[PiiCategory.direct_identifier] if pii else [],
        distinct=int(values.nunique()),
        format=value_format(values),
        reason=reason if role is ColumnRole.excluded else None,
    )


_LETTER = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"[0-9]")
_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
# Identifiers: at least this many values, nearly all distinct, of one shape.
_MIN_IDENTIFIER_VALUES = 20
_IDENTIFIER_DISTINCT = 0.9
# Free text: more distinct values than categories, and sentences rather than codes.
_TEXT_MIN_WORDS = 3


def value_format(values: pd.Series) -> str:
    """The values' shape with letters as ``A`` and digits as ``9``, never a value itself.

    One shape is written out ("A9999"); several give their lengths ("text, 5-40 chars").
    """
    if not len(values):
        return "empty"
    strings = values.map(_plain).astype(str)
    shapes = set(strings.map(lambda v: _DIGIT.sub("9", _LETTER.sub("A", v))))
    if len(shapes) == 1:
        shape = shapes.pop()
        # A shape with no letters or digits would spell the value out.
        if _LETTER.search(shape) is None and _DIGIT.search(shape) is None and shape:
            return f"{len(shape)} chars"
        return shape if "A" in shape or "9" in shape else f"{len(shape)} chars"
    lengths = strings.str.len()
    return f"text, {int(lengths.min())}-{int(lengths.max())} chars"


def _plain(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _iso_dates(values: pd.Series) -> bool:
    if not values.str.match(_ISO_DATE).all():
        return False
    return bool(pd.to_datetime(values, errors="coerce", format="ISO8601").notna().all())


def _identifier_like(values: pd.Series) -> bool:
    if len(values) < _MIN_IDENTIFIER_VALUES or pd.api.types.is_bool_dtype(values):
        return False
    if values.nunique() < _IDENTIFIER_DISTINCT * len(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=float)
        if not np.all(np.mod(numbers, 1) == 0) or numbers.min() < 1000:
            return False  # measurements have fractions; small counts are not ids
    strings = values.map(_plain).astype(str)
    if strings.str.contains(r"\s").any():
        return False
    shapes = set(strings.map(lambda v: _DIGIT.sub("9", _LETTER.sub("A", v))))
    return len(shapes) == 1 and "9" in next(iter(shapes))


def _free_text(values: pd.Series) -> bool:
    distinct = values.nunique()
    if distinct <= MAX_CATEGORIES:
        return False
    words = values.str.split().str.len()
    return bool(words.median() >= _TEXT_MIN_WORDS or distinct >= 0.5 * len(values))


def _pii_matches(values: pd.Series) -> bool:
    """Whether any value holds an email, phone, national id or card number (the PII check's)."""
    return bool(pii_kinds(values))


def _check_label(series: pd.Series) -> None:
    # Values are not quoted: they are the sensitive data itself.
    missing = series.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise InputError(
            f"column {series.name!r} (label): {int(missing.sum())} missing value(s) "
            f"(first on line {first + 2}); every row needs a label"
        )
    if series.nunique() < 2:
        raise InputError(
            f"column {series.name!r} (label): a single class in every row; "
            "a label needs at least two"
        )


def _describe(series: pd.Series, role: ColumnRole) -> ColumnSpec:
    values = series.dropna()
    nullable = bool(series.isna().any())
    if pd.api.types.is_bool_dtype(series):
        return ColumnSpec(name=series.name, type=ColumnType.boolean, role=role, nullable=nullable)
    if pd.api.types.is_numeric_dtype(series):
        integral = pd.api.types.is_integer_dtype(series) or bool(
            np.all(np.mod(values.to_numpy(dtype=float), 1) == 0)
        )
        minimum = float(values.min()) if len(values) else None
        maximum = float(values.max()) if len(values) else None
        distinct = values.unique()
        categories = None
        if integral and role is not ColumnRole.identifier and 0 < len(distinct) <= MAX_CATEGORIES:
            categories = sorted(int(v) for v in distinct)
        return ColumnSpec(
            name=series.name,
            type=ColumnType.integer if integral else ColumnType.number,
            role=role,
            nullable=nullable,
            minimum=minimum,
            maximum=maximum,
            categories=categories,
        )
    distinct = values.astype(str).unique()
    categories = sorted(distinct) if 0 < len(distinct) <= MAX_CATEGORIES else None
    return ColumnSpec(
        name=series.name,
        type=ColumnType.string,
        role=role,
        nullable=nullable,
        categories=categories,
    )
