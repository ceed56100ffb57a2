"""The files of one split, checked and opened as a DuckDB view with each row's position.

A split is a Parquet file, a directory of ``*.parquet`` files or a glob of
them (rows numbered across files in sorted file-name order), or one CSV file.
Everything that can be checked without reading the data (the files exist,
are not sealed, have one set of named columns, declare the roles the config
names) is checked here, and every error names the file and the field.
"""

from __future__ import annotations

import csv
import glob
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from governance.checks.config import CheckConfig
from governance.errors import InputError
from governance.large.sql import ident, literal
from privacy.encryption import is_encrypted

# The column every view adds: the row's 0-based position in the split as read.
# Names the scan makes start with this prefix, so no data column may.
RESERVED_PREFIX = "__custodian_"
ROW = f"{RESERVED_PREFIX}row"
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
SEALED_SUFFIX = ".enc"
# pandas.read_csv's default missing-value spellings, so that a CSV reads the
# same here as in the in-memory check.
CSV_NULLS = (
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
)
# Like pandas, a CSV column is read as booleans, numbers or text, never as dates.
_CSV_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "VARCHAR")


class SourceFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


@dataclass(frozen=True)
class Source:
    """One split's files, in the order their rows are numbered."""

    split: str  # "train" or "test": how errors and findings name it
    path: Path  # as given
    format: SourceFormat
    files: tuple[Path, ...]
    columns: tuple[str, ...]
    file_rows: tuple[int, ...] | None  # per Parquet file; None for CSV until it is read

    def where(self) -> str:
        return f"{self.split} ({self.path})"


def locate(path: Path, split: str) -> Source:
    """The files ``path`` names, checked; InputError naming the file otherwise."""
    files = _files(path)
    for file in files:
        _refuse_sealed(file)
    formats = {_format(file) for file in files}
    if len(formats) > 1:
        raise InputError(f"{path}: mixes Parquet and CSV files; give one format per split")
    (fmt,) = formats
    if fmt is SourceFormat.csv:
        if len(files) > 1:
            raise InputError(f"{path}: {len(files)} CSV files; give one CSV file or Parquet files")
        return Source(split, path, fmt, files, _csv_header(files[0]), None)
    columns, rows = _parquet_schema(files)
    return Source(split, path, fmt, files, columns, rows)


def check_pair(train: Source, test: Source, config: CheckConfig) -> None:
    """Every reason the pair cannot be scanned with ``config``, in one InputError."""
    problems = []
    for source in (train, test):
        if source.file_rows is not None and not sum(source.file_rows):
            problems.append(f"{source.path}: no rows")
    only_train = [c for c in train.columns if c not in test.columns]
    only_test = [c for c in test.columns if c not in train.columns]
    if only_train or only_test:
        problems.append(
            f"train ({train.path}) and test ({test.path}) columns differ:"
            f" only in train {only_train}, only in test {only_test}"
        )
    problems += config.missing_columns({s.where(): s.columns for s in (train, test)})
    if not config.features(train.columns):
        problems.append("no feature columns left to compare (all have a role or are excluded)")
    if problems:
        raise InputError("; ".join(problems))


def register(con: duckdb.DuckDBPyConnection, source: Source, view: str) -> int:
    """Create ``view``: the split's columns plus ``ROW``; returns its number of rows.

    Parquet rows are numbered by DuckDB's ``file_row_number`` plus the rows of
    the files before; a CSV file is copied into a table in file order (the
    only way DuckDB numbers CSV rows deterministically) and numbered by rowid.
    """
    columns = ", ".join(ident(c) for c in source.columns)
    try:
        if source.format is SourceFormat.parquet:
            assert source.file_rows is not None
            offsets = [sum(source.file_rows[:i]) for i in range(len(source.files))]
            body = " UNION ALL ".join(
                f"SELECT {columns}, file_row_number + {offset} AS {ident(ROW)}"
                f" FROM read_parquet({literal(file)}, file_row_number = true)"
                for file, offset in zip(source.files, offsets, strict=True)
            )
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(view)} AS {body}")
            return sum(source.file_rows)
        raw = ident(f"{view}_raw")
        nulls = ", ".join(literal(v) for v in CSV_NULLS)
        types = ", ".join(literal(t) for t in _CSV_TYPES)
        con.execute("SET preserve_insertion_order = true")
        try:
            con.execute(
                f"CREATE OR REPLACE TABLE {raw} AS SELECT * FROM read_csv("
                f"{literal(source.files[0])}, header = true, sample_size = -1,"
                f" auto_type_candidates = [{types}], nullstr = [{nulls}], strict_mode = true)"
            )
        finally:
            con.execute("SET preserve_insertion_order = false")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {ident(view)} AS"
            f" SELECT {columns}, rowid AS {ident(ROW)} FROM {raw}"
        )
        (rows,) = con.execute(f"SELECT count(*) FROM {raw}").fetchone() or (0,)
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as err:
        raise InputError(
            f"{source.path}: cannot read as {source.format}: {_first_line(err)}"
        ) from None
    if not rows:
        raise InputError(f"{source.path}: header only, no data rows")
    return int(rows)


def column_types(con: duckdb.DuckDBPyConnection, view: str) -> dict[str, str]:
    """Column name -> DuckDB type of ``view`` (without ``ROW``)."""
    described = con.execute(f"DESCRIBE {ident(view)}").fetchall()
    return {name: str(kind) for name, kind, *_ in described if name != ROW}


def _files(path: Path) -> tuple[Path, ...]:
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = tuple(sorted(Path(p) for p in glob.glob(text) if Path(p).is_file()))
        if not files:
            raise InputError(f"{path}: no file matches")
        return files
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.suffix in PARQUET_SUFFIXES))
        if not files:
            raise InputError(f"{path}: directory holds no Parquet files (*.parquet)")
        return files
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    return (path,)


def _refuse_sealed(file: Path) -> None:
    with file.open("rb") as handle:
        head = handle.read(16)
    if file.name.endswith(SEALED_SUFFIX) or is_encrypted(head):
        raise InputError(
            f"{file}: sealed (encrypted) file; the out-of-core check reads plaintext Parquet or"
            " CSV only and never writes decrypted data to disk (use the in-memory check)"
        )


def _format(file: Path) -> SourceFormat:
    suffix = file.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return SourceFormat.parquet
    if suffix == ".csv":
        return SourceFormat.csv
    raise InputError(
        f"{file}: unsupported file type {suffix or '(none)'!r}; give Parquet (.parquet) or CSV"
    )


def _check_names(file: Path, names: Sequence[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name.strip():
            raise InputError(f"{file}: column {i + 1} has no name")
        if name in seen:
            raise InputError(f"{file}: duplicate column name {name!r}")
        if name == "file_row_number" or name.startswith(RESERVED_PREFIX):
            raise InputError(f"{file}: column name {name!r} is reserved for row numbers; rename it")
        seen.add(name)


def _csv_header(file: Path) -> tuple[str, ...]:
    try:
        with file.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as err:
        raise InputError(f"{file}: not UTF-8 text (byte {err.start})") from None
    if not header:
        raise InputError(f"{file}: file is empty")
    if len(header) < 2:
        raise InputError(
            f"{file}: header has {len(header)} column; expected a comma-separated file"
        )
    _check_names(file, header)
    return tuple(header)


def _parquet_schema(files: Sequence[Path]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    columns: tuple[str, ...] | None = None
    rows = []
    for file in files:
        try:
            with pq.ParquetFile(file) as parquet:
                names = tuple(parquet.schema_arrow.names)
                rows.append(parquet.metadata.num_rows)
        except (pa.ArrowException, OSError) as err:
            raise InputError(f"{file}: not a readable Parquet file ({_first_line(err)})") from None
        _check_names(file, names)
        if columns is None:
            columns = names
        elif names != columns:
            raise InputError(
                f"{file}: columns {list(names)} differ from {list(columns)} in {files[0]}"
            )
    assert columns is not None
    return columns, tuple(rows)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else err.__class__.__name__
