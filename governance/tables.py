"""Reading tabular files strictly, and describing their columns.

pandas is forgiving by default (it renames duplicate headers, pads ragged
rows, guesses encodings); a governed pipeline must refuse instead, naming the
file and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd

from governance.errors import InputError
from governance.provenance import ColumnRole, ColumnSpec, ColumnType

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


def infer_columns(frame: pd.DataFrame, roles: dict[str, ColumnRole]) -> list[ColumnSpec]:
    """Describe each column (type, nullability, range, categories) as observed.

    The result is a starting point for the declared schema: the data steward
    reviews it, and the expectation suite is generated from it.
    """
    unknown = sorted(set(roles) - set(frame.columns))
    if unknown:
        raise InputError(f"column role names unknown column(s): {', '.join(unknown)}")
    for name, role in roles.items():
        if role is ColumnRole.label:
            _check_label(frame[name])
    return [_describe(frame[name], roles.get(name, ColumnRole.feature)) for name in frame.columns]


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
