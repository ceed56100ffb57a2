"""DuckDB under a memory limit, and the per-split hash tables every out-of-core detector reads.

Each split is reduced, inside DuckDB, to one table of
``(pos, f, r, id, t, labelled)``: the row's 0-based position in the file, the
hash of its feature cells, the hash of its features and label, the hash of its
identifier (NULL when missing), its time (a number, or nanoseconds since the
epoch, UTC; NULL when missing) and whether it has a label. Cells are
normalised as ``governance.checks.frames`` normalises them, as far as SQL
allows, so both scans put the same rows in the same equality classes:

- a column numeric in both splits: numbers as DOUBLE rounded to
  ``float_decimals`` exactly as numpy rounds (scale, round half to even,
  unscale), -0.0 as 0.0, NaN as missing, booleans as 1.0/0.0;
- a column of timestamps in both splits: nanoseconds since the epoch, UTC
  (naive timestamps read as UTC);
- any other column: text, stripped and whitespace-collapsed (Python's
  whitespace set, not only ASCII), lower-cased, with ``ß`` folded to ``ss``;
  text that starts like a number and parses as one is that number, rounded as
  above and spelt once (``'1'``, ``' 1.0 '`` and ``1`` agree);
- missing values are equal to each other.

Cells are hashed with DuckDB's 64-bit ``hash()`` and combined per row with
its variadic form, in train's column order. The hashes differ from the
in-memory scan's (only equality matters). Known differences in what counts as
equal:

- DuckDB's ``lower`` is not Python's ``casefold``: besides ``ß``, full case
  foldings (ligatures such as ``ﬁ``, long ``ſ``, ``İ``) are not applied;
- text that looks like a number is rounded the numpy way; the in-memory scan
  rounds such text with Python's exact ``round``. The two differ only for a
  value within one unit in the last place of a rounding tie;
- DuckDB's number parser and Python's ``float`` agree on the spellings tested
  (signs, exponents, ``inf``/``nan``, ``_`` between digits), not on every string;
- columns of other types (dates, lists, decimals) are compared as DuckDB
  spells them as text;
- text time columns are parsed by DuckDB's ISO-8601 timestamp parser, not
  pandas' ``format="mixed"``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import duckdb

from governance.checks.config import CheckConfig
from governance.errors import InputError
from governance.large.limits import ScanLimits
from governance.large.sources import ROW, Source, column_types
from governance.large.sql import ident, literal

# Python's str.isspace() characters: what str.split() splits on.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS = "[" + "".join(f"\\x{{{ord(c):X}}}" for c in PY_WHITESPACE) + "]+"
_NUMBER_START = ("+", "-", ".", *"0123456789")
_NUMERIC_TYPES = frozenset(
    {
        "BOOLEAN",
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
        "FLOAT",
        "DOUBLE",
    }
)
_INSTANT_TYPES = frozenset(
    {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE"}
)
_DATE_TYPES = _INSTANT_TYPES | {"DATE"}
SPLITS = ("train", "test")


def is_numeric_type(duckdb_type: str) -> bool:
    return duckdb_type in _NUMERIC_TYPES or duckdb_type.startswith("DECIMAL")


class Kind(StrEnum):
    """How a column's cells are normalised: decided from both splits' types together."""

    number = "number"
    instant = "instant"
    text = "text"


class Engine:
    """A DuckDB database in a fresh scratch directory, with the scan's limits; removed on exit.

    The database lives in a file so that the hash tables, not only the
    intermediate results, can leave memory; DuckDB spills beyond
    ``memory_limit`` into the same directory.
    """

    def __init__(self, limits: ScanLimits) -> None:
        self.limits = limits
        self._directory: Path | None = None
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> Engine:
        parent = self.limits.temp_directory
        try:
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._directory = Path(tempfile.mkdtemp(prefix="custodian-large-", dir=parent))
        except OSError as err:
            raise InputError(
                f"temp directory {parent}: cannot create a scratch directory ({err})"
            ) from None
        try:
            self._con = duckdb.connect(
                str(self._directory / "scan.duckdb"),
                config={
                    "memory_limit": self.limits.memory_limit,
                    "threads": self.limits.threads,
                    "temp_directory": str(self._directory / "spill"),
                    "preserve_insertion_order": False,
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                },
            )
            # Text times without an offset are UTC, as the in-memory scan reads them.
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute("SET enable_progress_bar = false")
        except BaseException:
            self.__exit__(None, None, None)  # __exit__ does not run when __enter__ fails
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("Engine used outside its with-block")
        return self._con

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def value(self, sql: str) -> object:
        (row,) = self.rows(sql)
        return row[0]


@dataclass(frozen=True)
class Plan:
    """Which columns are hashed, and how, for one train/test pair."""

    features: tuple[str, ...]  # in train's order
    label: str | None
    id_column: str | None
    time_column: str | None
    kinds: Mapping[str, Kind]  # features, label and identifier
    time_kind: Kind | None  # number or instant
    types: Mapping[str, Mapping[str, str]]  # split -> column -> DuckDB type

    @property
    def compared(self) -> tuple[str, ...]:
        """Features and the label: the columns duplicates are judged on."""
        return (*self.features, *([self.label] if self.label is not None else []))


@dataclass(frozen=True)
class LargeContext:
    """Everything an out-of-core detector reads: the open engine, the config and the plan."""

    engine: Engine
    config: CheckConfig
    plan: Plan
    sources: Mapping[str, Source]
    rows: Mapping[str, int]  # split -> rows

    @staticmethod
    def table(split: str) -> str:
        return ident(f"{split}_h")


def make_plan(
    engine: Engine, sources: Mapping[str, Source], views: Mapping[str, str], config: CheckConfig
) -> Plan:
    """Column kinds from both splits' types; InputError for values no kind can compare."""
    types = {split: column_types(engine.con, views[split]) for split in SPLITS}
    ignored = {config.id_column, config.time_column, *config.exclude_columns}
    compared = [c for c in sources["train"].columns if c not in ignored]
    features = tuple(c for c in compared if c != config.label)
    hashed = [*compared, *([config.id_column] if config.id_column else [])]
    kinds = {c: _kind(types["train"][c], types["test"][c]) for c in hashed}
    problems = []
    for split in SPLITS:
        other = SPLITS[1 - SPLITS.index(split)]
        checks = {}
        for column in hashed:
            if is_numeric_type(types[other][column]) and not is_numeric_type(types[split][column]):
                checks[column] = f"try_cast({ident(column)} AS DOUBLE) IS NULL"
        time = config.time_column
        text_time = time is not None and types[split][time] == "VARCHAR"
        if text_time and not is_numeric_type(types[other][time]):
            checks[time] = f"try_cast({ident(time)} AS TIMESTAMPTZ) IS NULL"
        for column, (count, first) in _bad_values(engine, views[split], checks).items():
            if column == time:
                problems.append(
                    f"time column {column!r} in {sources[split].where()}: {count} value(s)"
                    f" cannot be read as dates (first at row {first})"
                )
            else:
                problems.append(
                    f"column {column!r} holds numbers in {other} but non-numeric values in"
                    f" {sources[split].where()} ({count} rows, first at row {first})"
                )
    time_kind = None
    if config.time_column is not None:
        time_types = {split: types[split][config.time_column] for split in SPLITS}
        numeric = [is_numeric_type(t) for t in time_types.values()]
        if all(numeric):
            time_kind = Kind.number
        elif any(numeric):
            problems.append(
                f"time column {config.time_column!r} is numeric in one split and not in the other"
            )
        else:
            time_kind = Kind.instant
            for split, kind in time_types.items():
                if kind not in _DATE_TYPES and kind != "VARCHAR":
                    problems.append(
                        f"time column {config.time_column!r} in {sources[split].where()} has"
                        f" type {kind}; give numbers, dates or timestamps"
                    )
    if problems:
        raise InputError("; ".join(problems))
    return Plan(
        features, config.label, config.id_column, config.time_column, kinds, time_kind, types
    )


def _kind(train_type: str, test_type: str) -> Kind:
    if is_numeric_type(train_type) and is_numeric_type(test_type):
        return Kind.number
    if train_type in _INSTANT_TYPES and test_type in _INSTANT_TYPES:
        return Kind.instant
    return Kind.text


def _bad_values(engine: Engine, view: str, checks: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """Column -> (rows failing its check, first such row) for checks any row fails."""
    if not checks:
        return {}
    parts = []
    for column, failing in checks.items():
        condition = f"{ident(column)} IS NOT NULL AND {failing}"
        parts.append(f"count(*) FILTER ({condition}), min({ident(ROW)}) FILTER ({condition})")
    (row,) = engine.rows(f"SELECT {', '.join(parts)} FROM {ident(view)}")
    found = {}
    for i, column in enumerate(checks):
        count, first = row[2 * i], row[2 * i + 1]
        if count:
            found[column] = (int(count), int(first))
    return found


def install_macros(engine: Engine, decimals: int) -> None:
    """The normalisation functions, as SQL macros over one value."""
    scale = f"CAST({10**decimals} AS DOUBLE)"
    two = "CAST(2 AS DOUBLE)"
    numbers = ", ".join(literal(c) for c in _NUMBER_START)
    for macro in (
        # numpy's rint: round half to even (DuckDB's round is half away from zero).
        f"custodian_rint(v) AS CASE WHEN abs(v - trunc(v)) = 0.5"
        f" THEN {two} * round(v / {two}) ELSE round(v) END",
        # np.round(x, decimals) + 0.0: -0.0 becomes 0.0.
        f"custodian_round(x) AS CASE WHEN custodian_rint(x * {scale}) = 0"
        f" THEN CAST(0 AS DOUBLE) ELSE custodian_rint(x * {scale}) / {scale} END",
        "custodian_number(x) AS CASE WHEN isnan(x) THEN NULL ELSE custodian_round(x) END",
        # A number inside a text column, spelt once; NaN and inf spelt 'nan' and 'inf' as in Python.
        "custodian_number_text(x) AS CAST(custodian_round(x) AS VARCHAR)",
        f"custodian_fold(s) AS replace(lower(regexp_replace(regexp_replace("
        f"s, '^{_WS}|{_WS}$', '', 'g'), '{_WS}', ' ', 'g')), 'ß', 'ss')",
        # Applied to folded text: text that starts like a number and is one becomes it.
        f"custodian_text(s) AS CASE WHEN left(s, 1) IN ({numbers})"
        f" AND try_cast(s AS DOUBLE) IS NOT NULL"
        f" THEN custodian_number_text(try_cast(s AS DOUBLE)) ELSE s END",
    ):
        engine.con.execute(f"CREATE OR REPLACE TEMP MACRO {macro}")


def _folded(column: str, kind: Kind, duckdb_type: str) -> str:
    """First pass: text columns folded once, so the second pass can test and reuse the result."""
    name = ident(column)
    if kind is Kind.text and not is_numeric_type(duckdb_type):
        return f"custodian_fold(CAST({name} AS VARCHAR)) AS {name}"
    return name


def _cell(column: str, kind: Kind, duckdb_type: str) -> str:
    """Second pass: the normalised value of a cell, NULL when missing."""
    name = ident(column)
    if kind is Kind.number:
        return f"custodian_number(CAST({name} AS DOUBLE))"
    if kind is Kind.instant:
        return f"epoch_ns({name})"
    if is_numeric_type(duckdb_type):
        number = f"CAST({name} AS DOUBLE)"
        return f"CASE WHEN isnan({number}) THEN NULL ELSE custodian_number_text({number}) END"
    return f"custodian_text({name})"


def normalised_cells(plan: Plan, split: str, source: str, columns: Sequence[str]) -> str:
    """A query of the normalised cells of ``columns`` in ``source`` (as ``hash_split`` has them)."""
    types = plan.types[split]
    folded = ", ".join(_folded(c, plan.kinds[c], types[c]) for c in columns)
    cells = ", ".join(f"{_cell(c, plan.kinds[c], types[c])} AS {ident(c)}" for c in columns)
    return f"SELECT {cells} FROM (SELECT {folded} FROM {source})"


def _time(column: str, kind: Kind, duckdb_type: str) -> str:
    name = ident(column)
    if kind is Kind.number:
        number = f"CAST({name} AS DOUBLE)"
        return f"CASE WHEN isnan({number}) THEN NULL ELSE {number} END"
    if duckdb_type == "VARCHAR":
        return f"epoch_ns(try_cast({name} AS TIMESTAMPTZ))"
    if duckdb_type == "DATE":
        return f"epoch_ns(CAST({name} AS TIMESTAMP))"
    return f"epoch_ns({name})"


def hash_split(engine: Engine, plan: Plan, split: str, view: str) -> None:
    """Materialise ``LargeContext.table(split)`` from ``view`` (see the module docstring)."""
    types = plan.types[split]
    used = [*plan.compared, *(c for c in (plan.id_column, plan.time_column) if c is not None)]
    first = [ident(ROW)] + [
        _folded(c, plan.kinds[c], types[c]) if c in plan.kinds else ident(c) for c in used
    ]
    features = ", ".join(_cell(c, plan.kinds[c], types[c]) for c in plan.features)
    label = plan.label
    if label is None:
        row_hash, label_cell, labelled = "__custodian_f", "NULL", "true"
    else:
        row_hash = "hash(__custodian_f, __custodian_label)"
        label_cell = _cell(label, plan.kinds[label], types[label])
        labelled = f"{ident(label)} IS NOT NULL"
        if is_numeric_type(types[label]):
            labelled += f" AND NOT isnan(CAST({ident(label)} AS DOUBLE))"
    identifier = "CAST(NULL AS UBIGINT)"
    if plan.id_column is not None:
        cell = _cell(plan.id_column, plan.kinds[plan.id_column], types[plan.id_column])
        identifier = f"CASE WHEN {cell} IS NULL THEN NULL ELSE hash({cell}) END"
    time = "CAST(NULL AS DOUBLE)"
    if plan.time_column is not None:
        assert plan.time_kind is not None
        time = _time(plan.time_column, plan.time_kind, types[plan.time_column])
    # Every name made here starts with __custodian_, which no data column may (see sources).
    engine.con.execute(
        f"CREATE OR REPLACE TABLE {LargeContext.table(split)} AS"
        f" SELECT __custodian_pos AS pos, __custodian_f AS f, {row_hash} AS r,"
        f" __custodian_id AS id, __custodian_t AS t, __custodian_labelled AS labelled FROM ("
        f"SELECT {ident(ROW)} AS __custodian_pos, hash({features}) AS __custodian_f,"
        f" {label_cell} AS __custodian_label, {identifier} AS __custodian_id,"
        f" {time} AS __custodian_t, {labelled} AS __custodian_labelled"
        f" FROM (SELECT {', '.join(first)} FROM {ident(view)}))"
    )


@contextmanager
def duckdb_errors_named(limits: ScanLimits) -> Iterator[None]:
    """DuckDB failing on the data or the limits, as an InputError naming what to change.

    Errors in the SQL itself (parser, binder, internal) are bugs and propagate as they are.
    """
    try:
        yield
    except duckdb.OutOfMemoryException as err:
        raise InputError(
            f"out of memory within memory_limit={limits.memory_limit} with {limits.threads}"
            f" thread(s): raise the limit or use fewer threads ({_first_line(err)})"
        ) from None
    except duckdb.IOException as err:
        where = limits.temp_directory or "the system temp directory"
        raise InputError(
            f"reading the data or writing spill files (to {where}) failed: {_first_line(err)}"
        ) from None
    except (duckdb.InvalidInputException, duckdb.ConversionException) as err:
        raise InputError(f"DuckDB cannot read the data: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else err.__class__.__name__
