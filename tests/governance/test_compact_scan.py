"""The scan's compact, derived-on-access state gives what whole arrays gave.

A scan no longer holds every cell's hash and value: numbers are re-read from
the frame, categories kept as small codes, numeric points filled column by
column into the array the KD-tree keeps, and the numeric index looks keys up
by binary search. These tests hold each to a plain whole-array reference
computed here, on data with the awkward cases (missing values, -0.0, more
than 63 numeric columns, keys train never saw).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from governance.checks import CheckConfig
from governance.checks.frames import (
    NULL_HASH,
    NumericSpace,
    _fold,
    _string_cells,
    _text_cells,
)
from governance.checks.scan import prepare_scan
from governance.checks.similarity import NumericIndex, mix64

N_NUMERIC = 70  # more than 63: the missing pattern takes two packed words


def _frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    numbers = rng.normal(size=(n, N_NUMERIC)).round(2)
    numbers[rng.random(numbers.shape) < 0.05] = np.nan
    numbers[:5, 0] = -0.0
    data = {f"x{i}": numbers[:, i] for i in range(N_NUMERIC)}
    colour = rng.choice(["red", "Red ", "blue", None], size=n).tolist()
    ticket = [f"T{v}" for v in rng.permutation(n)]  # mostly distinct: kept as hashes
    note = [" ".join(rng.choice(["a", "b", "c", "d", "e", "f"], size=6)) for _ in range(n)]
    return pd.DataFrame(
        {
            **data,
            "count": rng.integers(0, 5, size=n),
            "when": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 9, n), "D"),
            "colour": pd.Series(colour, dtype="str"),
            "ticket": pd.Series(ticket, dtype="str"),
            "note": pd.Series(note, dtype="str"),
            "label": rng.integers(0, 2, size=n),
        }
    )


@pytest.fixture(scope="module")
def ctx():
    rng = np.random.default_rng(11)
    train, test = _frame(3000, rng), _frame(700, rng)
    test.iloc[:50] = train.iloc[:50].to_numpy()  # some keys train has
    config = CheckConfig(label="label", text_columns=("note",))
    return prepare_scan(train, test, {}, config=config)


def _numeric_reference(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The eager hashing the scan did before: rounded values and their hashes."""
    values = np.round(series.to_numpy(dtype=np.float64, na_value=np.nan), 4) + 0.0
    canonical = np.where(np.isnan(values), np.nan, values)
    return mix64(canonical.view(np.uint64)), values


def test_cells_and_numbers_derived_on_access_equal_whole_array_hashing(ctx) -> None:
    for split in (ctx.train, ctx.test):
        frame = split.frame
        for column in [*(f"x{i}" for i in range(N_NUMERIC)), "count", "label"]:
            hashes, values = _numeric_reference(frame[column])
            assert np.array_equal(split.cells[column], hashes)
            assert np.array_equal(split.numbers[column], values, equal_nan=True)
        # -0.0 and 0.0 are one value; every NaN hashes alike.
        assert len({int(h) for h in split.cells["x0"][frame["x0"].fillna(1.0).eq(0.0)]}) <= 1
        ns = frame["when"].dt.as_unit("ns").to_numpy().view(np.int64)
        assert np.array_equal(split.cells["when"], mix64(ns.view(np.uint64)))
        assert np.array_equal(split.numbers["when"], ns.astype(np.float64))
        for column in ("colour", "ticket"):
            assert np.array_equal(split.cells[column], _string_cells(frame[column], 4)[0])
        assert np.array_equal(split.cells["note"], _text_cells(frame["note"], 4)[0])
        missing = frame["colour"].isna().to_numpy()
        assert missing.any() and (split.cells["colour"][missing] == NULL_HASH).all()
        # ' Red ' and 'red' are one category after normalising.
        red = frame["colour"].str.strip().str.lower().eq("red").fillna(False).to_numpy()
        assert len(set(split.cells["colour"][red].tolist())) == 1
        expected = _fold([split.cells[c] for c in split.feature_columns], len(split))
        assert np.array_equal(split.features, expected)
        assert np.array_equal(split.rows, _fold([expected, split.cells["label"]], len(split)))


def test_categories_are_kept_as_small_codes_and_each_access_is_a_new_array(ctx) -> None:
    makers = ctx.train.cells._makers
    # Four values fit int8 codes; a mostly distinct column is kept as its hashes.
    assert makers["colour"].args[0].dtype == np.int8
    assert makers["ticket"].args[0].dtype == np.uint64
    first = ctx.train.cells["colour"]
    first[:] = 0  # a caller changing what it got changes nothing kept
    assert np.array_equal(ctx.train.cells["colour"], _string_cells(ctx.train.frame["colour"], 4)[0])
    assert "x3" in ctx.train.numbers and "colour" not in ctx.train.numbers
    assert set(ctx.train.cells) >= {"x0", "colour", "note", "label"}


def test_points_and_keys_equal_whole_matrix_standardising(ctx) -> None:
    columns = tuple(f"x{i}" for i in range(N_NUMERIC))
    values = [ctx.train.numbers[c] for c in columns]
    space = NumericSpace(
        columns=columns,
        mean=np.array([np.nanmean(v) for v in values]),
        std=np.array([np.nanstd(v) for v in values]),
        exact_columns=("colour", "when"),
    )
    for split in (ctx.train, ctx.test):
        stacked = np.column_stack([split.numbers[c] for c in space.columns])
        missing = np.isnan(stacked)
        expected = (stacked - space.mean) / space.std
        expected[missing] = 0.0
        keys = _fold([split.cells[c] for c in space.exact_columns], len(split))
        for start in range(0, missing.shape[1], 63):
            chunk = missing[:, start : start + 63].astype(np.uint64)
            shifts = np.arange(chunk.shape[1], dtype=np.uint64)
            keys = mix64(keys ^ (chunk << shifts).sum(axis=1, dtype=np.uint64))
        points, got_keys = space.embed(split, spare=1)
        assert points.shape == (len(split), len(space.columns) + 1)
        assert np.array_equal(points[:, :-1], expected)
        assert np.array_equal(got_keys, keys)


def test_the_tree_keeps_the_filled_array_and_finds_slabs_by_binary_search() -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 40, size=5000).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    slotted = np.empty((5000, 4))
    slotted[:, :3] = rng.normal(size=(5000, 3))
    points = slotted[:, :3].copy()
    index = NumericIndex.build(slotted, keys, background_rate=0.001, sample=2000, seed=0)
    assert np.shares_memory(index.tree.data, slotted)
    codes, uniques = pd.factorize(keys)
    # The slab coordinate is the key's first-appearance code, as a factorised index gives it.
    assert np.array_equal(index.tree.data[:, :3], points)
    assert np.array_equal(index.tree.data[:, 3], codes * index.spacing)
    asked = np.concatenate([keys[:100], rng.integers(0, 2**63, size=100).astype(np.uint64)])
    assert np.array_equal(index._slabs_of(asked), pd.Index(uniques).get_indexer(asked))
    found, nearest = index.match(points[:30] + 1e-9, keys[:30])
    assert np.array_equal(found, np.arange(30)) and np.array_equal(nearest, np.arange(30))
    unknown = np.full(30, 12345, dtype=np.uint64)
    assert len(index.match(points[:30], unknown)[0]) == 0
