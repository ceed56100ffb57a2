"""Normalised, hashed views of the frames a scan compares.

Every cell is reduced to a 64-bit hash of its normalised value (numbers as
floats rounded to ``float_decimals``, strings stripped, whitespace-collapsed
and casefolded, missing values equal to each other), and every row to a hash of
its cells, so that comparing millions of rows is a vectorised set operation.
The shared, expensive structures (nearest-neighbour and MinHash indexes over
train) are built once, on first use, and reused by every check that needs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property, partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from governance.checks.config import CheckConfig
from governance.checks.similarity import (
    BandTables,
    NumericIndex,
    TextLsh,
    lowered,
    mix64,
    string_hashes,
    utf8_buffer,
    word_hashes,
)
from governance.errors import InputError

# Hash of a missing cell; any fixed value works because hashes are only compared.
NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_ROW_SEED = np.uint64(0x2545F4914F6CDD1D)
_NUMBER_START = frozenset("+-.0123456789")
# What makes an ASCII value need more than casefolding: whitespace other than
# single spaces between words (str.split also splits on \x1c-\x1f), or a
# start like a number's.
_NOT_PLAIN = r"[\t\n\x0b\x0c\r\x1c-\x1f]|  |^[ +\-.0-9]| $"
# Enough values to tell free text from categories without reading a million rows.
_KIND_SAMPLE = 2000
# Train rows hashed into words at a time by the text search: bounds its memory
# to tens of MB (a million 12-word rows would take ~100 MB of word hashes at once).
_TEXT_CHUNK_ROWS = 50_000
_ALL = slice(None)
# Free-text rows hashed at a time (see ``_text_cells``).
_CELL_CHUNK_ROWS = 50_000


class ColumnKind(StrEnum):
    numeric = "numeric"
    datetime = "datetime"
    category = "category"  # short strings, compared exactly
    text = "text"  # free text, also compared by word-set similarity


@dataclass(frozen=True)
class Roles:
    label: str | None
    id_column: str | None
    time_column: str | None
    features: tuple[str, ...]  # compared columns other than the label, in train's order
    kinds: Mapping[str, ColumnKind]  # of the features and the label

    def of_kind(self, kind: ColumnKind) -> tuple[str, ...]:
        return tuple(c for c in self.features if self.kinds[c] is kind)


class DerivedColumns(Mapping[str, np.ndarray]):
    """Column -> one array per row, made when asked for from what the scan keeps.

    Holding every column's hashes and values would cost 8 bytes a cell each
    (~250 MB for a million rows of 20 columns); numbers are re-read from the
    frame instead (a few ms a column), categories kept as small codes into
    their distinct values' hashes, and only free text's hashes are kept whole.
    """

    def __init__(self, makers: Mapping[str, Callable[[], np.ndarray]]) -> None:
        self._makers = dict(makers)

    def __getitem__(self, column: str) -> np.ndarray:
        return self._makers[column]()

    def __contains__(self, column: object) -> bool:
        return column in self._makers

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


@dataclass(frozen=True, eq=False)
class HashedFrame:
    """One frame as the checks see it. Arrays are aligned with the frame's row positions."""

    name: str
    frame: pd.DataFrame
    feature_columns: tuple[str, ...]  # the features ``features`` hashes (a reference's shared ones)
    # Both made on access (see ``DerivedColumns``), each time a new array:
    cells: Mapping[str, np.ndarray]  # column -> uint64 hash per row (features, label, id)
    numbers: Mapping[str, np.ndarray]  # numeric (rounded) or datetime (ns) column -> float64
    features: np.ndarray  # uint64 hash of the feature cells
    rows: np.ndarray  # uint64 hash of feature and label cells (features only without a label)
    # The time column: float64 when numeric (NaN if missing), else int64 ns since
    # the epoch, UTC (NaT's integer if missing); None without a time column.
    time: np.ndarray | None

    def __len__(self) -> int:
        return len(self.frame)

    def hashes_without(self, dropped: Sequence[str], roles: Roles) -> tuple[np.ndarray, np.ndarray]:
        """(feature hashes, row hashes) as if the ``dropped`` features were not there."""
        if not dropped:
            return self.features, self.rows
        features = _fold(
            (self.cells[c] for c in self.feature_columns if c not in dropped), len(self)
        )
        has_label = roles.label is not None and roles.label in self.cells
        rows = _fold([features, self.cells[roles.label]], len(self)) if has_label else features
        return features, rows


@dataclass(frozen=True, eq=False)
class NumericSpace:
    """Train-standardised coordinates of the varying numeric features, plus an exact key.

    Rows can only be near when their categorical features, their
    train-constant numeric features and their pattern of missing numbers are
    identical; the key hashes exactly those.
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    exact_columns: tuple[str, ...]

    def embed(self, frame: HashedFrame, spare: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(points, keys) of ``frame``'s rows; ``spare`` more columns are left for the caller.

        Filled column by column: at a million rows each whole-matrix temporary
        would be ~80 MB.
        """
        width = len(self.columns)
        points = np.empty((len(frame), width + spare))
        # The pattern of missing numbers, bit-packed 63 columns to a word, so
        # that a missing value never matches a number.
        patterns = np.zeros((-(-width // 63), len(frame)), dtype=np.uint64)
        for i, column in enumerate(self.columns):
            values = frame.numbers[column]
            missing = np.isnan(values)
            patterns[i // 63] |= missing.astype(np.uint64) << np.uint64(i % 63)
            values -= self.mean[i]
            values /= self.std[i]
            values[missing] = 0.0
            points[:, i] = values
        keys = _fold((frame.cells[c] for c in self.exact_columns), len(frame))
        for pattern in patterns:
            keys = mix64(keys ^ pattern)
        return points, keys


@dataclass(frozen=True, eq=False)
class NumericNear:
    """Nearest train row within tolerance, in a :class:`NumericSpace`."""

    space: NumericSpace
    index: NumericIndex

    def match(self, frame: HashedFrame) -> tuple[np.ndarray, np.ndarray]:
        """(rows of ``frame``, their nearest train rows) for rows within tolerance."""
        return self.index.match(*self.space.embed(frame))


@dataclass(frozen=True, eq=False)
class TextNear:
    """Most similar train row by word-set Jaccard over the text columns.

    Train is streamed once, in chunks, past the buckets of every frame asked
    about (test and the references), so the search holds one chunk of train's
    words at a time; the matches are kept per frame.
    """

    columns: tuple[str, ...]
    found: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # id(frame) -> its matches

    @classmethod
    def search(
        cls,
        train: HashedFrame,
        frames: Sequence[HashedFrame],
        columns: tuple[str, ...],
        config: CheckConfig,
    ) -> TextNear:
        lsh = TextLsh.seeded(
            config.text_jaccard, config.text_minhash_bands, config.text_minhash_rows, config.seed
        )
        # Per frame, its rows with enough words and their signatures; the
        # words themselves are read again later for the candidate rows only.
        asked, signatures = [], []
        for frame in frames:
            offsets, words = _words(frame.frame, columns)
            rows = np.flatnonzero(np.diff(offsets) >= config.text_min_words)
            asked.append(rows)
            signatures.append(lsh.signatures(offsets, words, rows))
            del offsets, words
        bounds = np.cumsum([0, *(len(s) for s in signatures)])
        tables = BandTables(np.concatenate(signatures))
        del signatures  # the tables hold what is needed of them
        for start in range(0, len(train), _TEXT_CHUNK_ROWS):
            offsets, words = _words(train.frame, columns, slice(start, start + _TEXT_CHUNK_ROWS))
            rows = np.flatnonzero(np.diff(offsets) >= config.text_min_words)
            tables.offer(start + rows, lsh.signatures(offsets, words, rows))
        candidates = tables.candidates()
        del tables
        # Only the candidate rows' words are needed to verify the pairs.
        train_rows = np.unique(candidates[:, 1])
        train_words = (*_words(train.frame, columns, train_rows), train_rows)
        found = {}
        for frame, rows, first, stop in zip(frames, asked, bounds[:-1], bounds[1:], strict=True):
            mine = candidates[(candidates[:, 0] >= first) & (candidates[:, 0] < stop)]
            mine = mine - np.array([first, 0])
            query_rows = np.unique(rows[mine[:, 0]])
            query_words = (*_words(frame.frame, columns, query_rows), query_rows)
            found[id(frame)] = lsh.best(rows, mine, query_words, train_words)
        return cls(columns, found)

    def match(self, frame: HashedFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows of ``frame``, best train rows, Jaccard) for rows at or above the threshold."""
        return self.found[id(frame)]


@dataclass(frozen=True, eq=False)
class ScanContext:
    """Everything a detector reads: the config, column roles and the hashed frames."""

    config: CheckConfig
    roles: Roles
    train: HashedFrame
    test: HashedFrame
    references: Mapping[str, HashedFrame]
    # Results one detector computes and others reuse (e.g. the columns found to
    # encode the label, which duplicate checks leave out), keyed by who made them.
    derived: dict[str, object] = field(default_factory=dict)

    @cached_property
    def numeric_near(self) -> NumericNear | None:
        """The train-side index for numeric near-duplicates; None when there is no basis."""
        numeric = self.roles.of_kind(ColumnKind.numeric)
        if not numeric:
            return None
        # One column at a time: all of train's numbers would be ~90 MB a million rows.
        stats = {c: _mean_and_std(self.train.numbers[c]) for c in numeric}
        columns = tuple(c for c in numeric if stats[c][1] > 0)
        if not columns:
            return None
        space = NumericSpace(
            columns=columns,
            mean=np.array([stats[c][0] for c in columns]),
            std=np.array([stats[c][1] for c in columns]),
            exact_columns=self._near_key_columns(columns),
        )
        # The spare column takes each point's key coordinate (see NumericIndex.build).
        index = NumericIndex.build(
            *space.embed(self.train, spare=1),
            background_rate=self.config.near_duplicate_background_rate,
            sample=self.config.near_duplicate_sample,
            seed=self.config.seed,
        )
        return None if index.tolerance is None else NumericNear(space, index)

    def _near_key_columns(self, numeric: tuple[str, ...]) -> tuple[str, ...]:
        """Features a numeric near-duplicate must equal exactly.

        Text has its own similarity check, and identifier-like categories would
        make every row unique, so neither is part of the key.
        """
        limit = self.config.identifier_like_fraction * len(self.train)
        return tuple(
            c
            for c in self.roles.features
            if c not in numeric
            and self.roles.kinds[c] is not ColumnKind.text
            and len(pd.unique(self.train.cells[c])) <= limit
        )

    @cached_property
    def text_near(self) -> TextNear | None:
        """Text near-duplicates of test and the references; None without text columns."""
        columns = self.roles.of_kind(ColumnKind.text)
        if not columns:
            return None
        frames = [
            frame
            for frame in (self.test, *self.references.values())
            if set(frame.feature_columns).issuperset(columns)
        ]
        return TextNear.search(self.train, frames, columns, self.config)


def _mean_and_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the numbers present; (nan, 0.0) with fewer than two."""
    if (~np.isnan(values)).sum() < 2:
        return math.nan, 0.0
    return float(np.nanmean(values)), float(np.nanstd(values))


def prepare(
    train: pd.DataFrame,
    test: pd.DataFrame,
    references: Mapping[str, pd.DataFrame],
    config: CheckConfig,
) -> ScanContext:
    """Hash every frame. Inputs must already be validated (see ``scan``)."""
    ignored = {config.id_column, config.time_column, *config.exclude_columns}
    # Train and test are compared on the columns they share (see ``alignment``).
    compared = [c for c in train.columns if c not in ignored and c in test.columns]
    features = tuple(c for c in compared if c != config.label)
    # A column's kind must hold in every frame, or its cells would hash differently.
    kinds = {
        c: _kind(
            [train[c], test[c], *(f[c] for f in references.values() if c in f.columns)],
            config.text_min_words,
        )
        for c in compared
    }
    roles = Roles(config.label, config.id_column, config.time_column, features, kinds)
    hashed_columns = [*compared, *([config.id_column] if config.id_column else [])]
    id_kinds = (
        {config.id_column: _kind([train[config.id_column], test[config.id_column]], 0)}
        if config.id_column
        else {}
    )
    all_kinds = {**kinds, **id_kinds}
    times = _times(train, test, config.time_column)
    return ScanContext(
        config=config,
        roles=roles,
        train=_hash_frame(
            "train", train, hashed_columns, features, all_kinds, roles, config, times[0]
        ),
        test=_hash_frame(
            "test", test, hashed_columns, features, all_kinds, roles, config, times[1]
        ),
        references={
            name: _hash_frame(name, frame, shared, shared, all_kinds, roles, config, None)
            for name, frame in references.items()
            for shared in [[c for c in features if c in frame.columns]]
        },
    )


def alignment(
    train: pd.DataFrame,
    test: pd.DataFrame,
    references: Mapping[str, pd.DataFrame],
    config: CheckConfig,
) -> dict[str, list[str]]:
    """Per frame compared with train, the columns left out because only one side has them.

    A test split or a reference (a public benchmark rarely carries your
    identifier, dates or derived columns) is compared on the feature columns
    it shares with train; the report names the rest.
    """
    features = config.features(train.columns)
    labelled = [*features, *([config.label] if config.label in train.columns else [])]
    gaps = {
        "test": [c for c in labelled if c not in test.columns]
        + [c for c in test.columns if c not in train.columns]
    }
    shared = [c for c in features if c in test.columns]
    for name, frame in references.items():
        gaps[f"reference {name!r}"] = [c for c in shared if c not in frame.columns]
    return {where: columns for where, columns in gaps.items() if columns}


def _kind(columns: Sequence[pd.Series], text_min_words: int) -> ColumnKind:
    if all(pd.api.types.is_numeric_dtype(c) for c in columns):
        return ColumnKind.numeric
    if all(pd.api.types.is_datetime64_any_dtype(c) for c in columns):
        return ColumnKind.datetime
    sample = pd.concat([c.dropna().head(_KIND_SAMPLE) for c in columns])
    if text_min_words and len(sample):
        words = [len(str(v).split()) for v in sample]
        if float(np.median(words)) >= text_min_words:
            return ColumnKind.text
    return ColumnKind.category


def _hash_frame(
    name: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    features: Sequence[str],
    kinds: Mapping[str, ColumnKind],
    roles: Roles,
    config: CheckConfig,
    time: np.ndarray | None,
) -> HashedFrame:
    decimals = config.float_decimals
    cells: dict[str, Callable[[], np.ndarray]] = {}
    numbers: dict[str, Callable[[], np.ndarray]] = {}
    for column in columns:
        kind = kinds[column]
        if kind in _VALUES:
            cells[column] = partial(_from_frame, _CELLS[kind], frame, column, decimals)
            numbers[column] = partial(_from_frame, _VALUES[kind], frame, column, decimals)
        elif kind is ColumnKind.category:
            cells[column] = _kept_codes(*_string_codes(frame[column], decimals))
        else:
            cells[column] = partial(np.array, _text_cells(frame[column], decimals)[0])
    derived = DerivedColumns(cells)
    hashes = _fold((derived[c] for c in features), len(frame))
    has_label = roles.label is not None and roles.label in cells
    rows = _fold([hashes, derived[roles.label]], len(frame)) if has_label else hashes
    return HashedFrame(
        name, frame, tuple(features), derived, DerivedColumns(numbers), hashes, rows, time
    )


def _from_frame(
    make: Callable[[pd.Series, int], np.ndarray], frame: pd.DataFrame, column: str, decimals: int
) -> np.ndarray:
    return make(frame[column], decimals)


def _kept_codes(codes: np.ndarray, unique_hashes: np.ndarray) -> Callable[[], np.ndarray]:
    """Cell hashes from factorised codes, kept in the smallest integer type that holds them.

    Mostly distinct values (identifiers as text) are kept as their hashes: the
    codes would cost as much again.
    """
    if 2 * len(unique_hashes) > len(codes):
        return partial(np.array, _expand(codes, unique_hashes))
    small = codes.astype(np.min_scalar_type(-max(len(unique_hashes), 1)))
    return partial(_expand, small, unique_hashes)


def _expand(codes: np.ndarray, unique_hashes: np.ndarray) -> np.ndarray:
    return np.where(codes >= 0, unique_hashes[np.maximum(codes, 0)], NULL_HASH)


def _numeric_values(series: pd.Series, decimals: int) -> np.ndarray:
    """Numbers as float64 rounded to ``decimals``."""
    # Adding 0.0 turns -0.0 into 0.0, which would otherwise hash differently.
    values = np.round(series.to_numpy(dtype=np.float64, na_value=np.nan), decimals)
    values += 0.0
    return values


def _numeric_cells(series: pd.Series, decimals: int) -> np.ndarray:
    """Cell hashes of ``_numeric_values``."""
    values = _numeric_values(series, decimals)
    values[np.isnan(values)] = np.nan  # one bit pattern for every NaN
    return mix64(values.view(np.uint64))


def _datetime_values(series: pd.Series, decimals: int) -> np.ndarray:
    """Instants as UTC nanoseconds, as float64 values for ranking."""
    return np.where(series.isna().to_numpy(), np.nan, _nanoseconds(series).astype(np.float64))


def _datetime_cells(series: pd.Series, decimals: int) -> np.ndarray:
    """Cell hashes of instants as UTC nanoseconds."""
    return mix64(_nanoseconds(series).view(np.uint64))


def _nanoseconds(series: pd.Series) -> np.ndarray:
    utc = pd.to_datetime(series, utc=True).dt.tz_localize(None).dt.as_unit("ns")
    return utc.to_numpy().view(np.int64)


def _string_cells(series: pd.Series, decimals: int) -> tuple[np.ndarray, None]:
    """(cell hashes, None): each distinct value is normalised and hashed once."""
    return _expand(*_string_codes(series, decimals)), None


def _string_codes(series: pd.Series, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, -1 if missing; hash per distinct value)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    offsets, data = utf8_buffer(_canonical_array(uniques, decimals))
    # Casefolding what is left is lowercasing ASCII: plain values are ASCII,
    # and ``_canonical``'s output is casefolded already.
    return codes, string_hashes(offsets, lowered(data))


def _text_cells(series: pd.Series, decimals: int) -> tuple[np.ndarray, None]:
    """(cell hashes, None): free text is mostly distinct, so it is hashed row by row.

    Factorising first would cost a hash table over every value for few
    repeats; chunks bound the temporary copies. A value hashes as it would
    through ``_string_cells``.
    """
    hashes = np.full(len(series), NULL_HASH, dtype=np.uint64)
    for start in range(0, len(series), _CELL_CHUNK_ROWS):
        chunk = series.iloc[start : start + _CELL_CHUNK_ROWS]
        present = np.flatnonzero(chunk.notna().to_numpy())
        offsets, data = utf8_buffer(_canonical_array(chunk.iloc[present], decimals))
        hashes[start + present] = string_hashes(offsets, lowered(data))
    return hashes, None


def _canonical_array(uniques: pd.Index | pd.Series, decimals: int) -> pa.LargeStringArray:
    """The values, ``_canonical`` but for casefolding where that is all they need.

    Plain values (ASCII, single spaces between words and none at either end,
    not starting like a number) need nothing more and stay in arrow; the rest,
    usually few, go through ``_canonical``.
    """
    try:
        array = pa.array(uniques, type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        spelled = _canonical(uniques.to_numpy(dtype=object).tolist(), decimals)
        return pa.array(spelled, type=pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    redo = pc.or_(pc.invert(pc.string_is_ascii(array)), pc.match_substring_regex(array, _NOT_PLAIN))
    if not pc.any(redo).as_py():
        return array
    redone = _canonical(array.filter(redo).to_pylist(), decimals)
    return pc.replace_with_mask(array, redo, pa.array(redone, type=pa.large_string()))


# Kinds whose cells and values are re-read from the frame whenever asked for.
_CELLS: dict[ColumnKind, Callable[[pd.Series, int], np.ndarray]] = {
    ColumnKind.numeric: _numeric_cells,
    ColumnKind.datetime: _datetime_cells,
}
_VALUES: dict[ColumnKind, Callable[[pd.Series, int], np.ndarray]] = {
    ColumnKind.numeric: _numeric_values,
    ColumnKind.datetime: _datetime_values,
}


def _canonical(values: list[object], decimals: int) -> list[str]:
    """One spelling per value: '1', '1.0' and 1 agree; so do ' Foo  Bar' and 'foo bar'."""
    texts = [
        " ".join(v.split()).casefold() if isinstance(v, str) else _number_or_text(v, decimals)
        for v in values
    ]
    # Only strings that start like a number can be one; most text is spared the parse.
    return [_number_or_text(t, decimals) if t[:1] in _NUMBER_START else t for t in texts]


def _number_or_text(value: object, decimals: int) -> str:
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        return _number_text(float(value), decimals)
    text = " ".join(str(value).split()).casefold()
    try:
        return _number_text(float(text), decimals)
    except ValueError:
        return text


def _number_text(number: float, decimals: int) -> str:
    if not math.isfinite(number):
        return repr(number)
    return repr(round(number, decimals) + 0.0)


def _fold(hashes: Iterable[np.ndarray], n_rows: int) -> np.ndarray:
    """Order-dependent combination of per-cell hashes into one hash per row.

    Read one column at a time, so a generator holds one column's hashes at once.
    """
    row = np.full(n_rows, _ROW_SEED, dtype=np.uint64)
    for cell in hashes:
        row = mix64(row ^ cell)
    return row


def _times(
    train: pd.DataFrame, test: pd.DataFrame, column: str | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Comparable time values for both splits, or an InputError naming what cannot be read."""
    if column is None:
        return None, None
    series = {"train": train[column], "test": test[column]}
    numeric = [pd.api.types.is_numeric_dtype(s) for s in series.values()]
    if all(numeric):
        train_times, test_times = (
            s.to_numpy(dtype=np.float64, na_value=np.nan) for s in series.values()
        )
        return train_times, test_times
    if any(numeric):
        raise InputError(f"time column {column!r} is numeric in one split and not in the other")
    parsed = []
    for split, values in series.items():
        try:
            parsed.append(_nanoseconds(pd.to_datetime(values, utc=True, format="mixed")))
        except (ValueError, TypeError) as err:
            raise InputError(
                f"time column {column!r} in {split}: cannot read as dates ({err})"
            ) from None
    return parsed[0], parsed[1]


def _words(
    frame: pd.DataFrame, columns: Sequence[str], rows: slice | np.ndarray = _ALL
) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of the text columns per row (of ``rows`` if given), as CSR (offsets, hashes)."""
    per_column = [word_hashes(frame[c].iloc[rows]) for c in columns]
    if len(per_column) == 1:
        return per_column[0]
    n = len(per_column[0][0]) - 1
    # A word in one column is not the same word in another: salt by column.
    owner = np.concatenate([np.repeat(np.arange(n), np.diff(o)) for o, _ in per_column])
    hashes = np.concatenate([mix64(h ^ np.uint64(i)) for i, (_, h) in enumerate(per_column)])
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=n)
    return np.concatenate([[0], np.cumsum(counts)]), hashes[order]
