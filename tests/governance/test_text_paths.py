"""The compiled text paths of the scan agree with plain Python on the same values.

Word hashing, cell normalisation and the PII prefilter read arrow-backed
strings in place; these tests hold them to what ``str`` methods give, for
values that sit next to each other in arrow's buffer and for object columns.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import governance.checks.frames as frames
from governance.checks.frames import _canonical, _string_cells, _text_cells
from governance.checks.pii import _EMAIL, _PHONE, PiiKind, _candidates, _matches
from governance.checks.similarity import _python_word_hashes, lowered, spans, word_hashes

# Adjacent values whose words would run together without their boundaries,
# NUL, capitals, odd whitespace, multi-byte letters, missing values.
VALUES = [
    "Hello  WORLD foo",
    "bar",
    "baz qux",
    None,
    "",
    "a\x00b c",
    "  Tab\tand\nnewline ",
    "sep\x1cby python",
    "1.0",
    " 1 ",
    "Straße",
    "x" * 40 + " Y",
]


def _random_values(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    alphabet = list("aB1 .-+@()\t\x00Zé9")
    return ["".join(rng.choice(alphabet, size=rng.integers(0, 16))) for _ in range(n)]


@pytest.mark.parametrize("dtype", ["str", object])
def test_word_hashes_match_the_python_path(dtype: object) -> None:
    for values in (VALUES, [v for v in VALUES if v != "Straße"], _random_values(3000)):
        series = pd.Series(values, dtype=dtype)
        offsets, hashes = word_hashes(series)
        texts = [str(t) for t in series.to_numpy(dtype=object, na_value="")]
        expected_offsets, expected_hashes = _python_word_hashes(texts)
        assert np.array_equal(offsets, expected_offsets)
        assert np.array_equal(hashes, expected_hashes)


def test_cell_hashes_are_equal_exactly_where_canonical_spellings_are() -> None:
    values = [*VALUES[:3], *VALUES[4:], *_random_values(3000, seed=1), "foo bar", "FOO\tbar"]
    arrow = _string_cells(pd.Series(values, dtype="str"), 4)[0]
    python = _string_cells(pd.Series(values, dtype=object), 4)[0]
    # Arrow-backed and object columns of one split each must hash alike.
    assert np.array_equal(arrow, python)
    spelled = _canonical(values, 4)
    assert np.array_equal(pd.factorize(arrow)[0], pd.factorize(np.array(spelled))[0])


def test_pii_prefilter_matches_a_python_reference() -> None:
    values = pd.Index(pd.unique(pd.Series([*_random_values(5000, seed=2), "12 34 56", "x@y"])))
    run = re.compile(r"[0-9 \t().+\x00-]+")
    expected = [
        "@" in v or any(sum(c.isdigit() for c in m[0]) >= 6 for m in run.finditer(v))
        for v in values
    ]
    assert _candidates(values).tolist() == expected


def test_lowered_is_bytes_lower_on_every_byte() -> None:
    every = np.arange(256, dtype=np.uint8)
    expected = np.frombuffer(bytes(range(256)).lower(), dtype=np.uint8)
    assert np.array_equal(lowered(every), expected)


@pytest.mark.parametrize("dtype", ["str", object])
def test_text_cells_hash_each_row_as_string_cells_does(
    dtype: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so that values and missing ones fall on every side of a boundary.
    monkeypatch.setattr(frames, "_CELL_CHUNK_ROWS", 7)
    values = [*VALUES, *_random_values(500, seed=3), *VALUES, None]
    series = pd.Series(values, dtype=dtype)
    assert np.array_equal(_text_cells(series, 4)[0], _string_cells(series, 4)[0])


def test_pii_matches_are_per_row_as_a_python_search_says() -> None:
    values = [
        *_random_values(2000, seed=4),
        "mail a@example.com",
        None,
        "call (555) 555-0100",
        "mail a@example.com",
    ]
    matches = _matches(pd.Series(values, dtype="str"))
    for kind, pattern in ((PiiKind.email, _EMAIL), (PiiKind.phone, _PHONE)):
        expected = [v is not None and pattern.search(v) is not None for v in values]
        assert matches.kinds[kind].tolist() == expected
        assert any(expected)  # the planted values count


def _python_spans(mask: list[bool], offsets: list[int]) -> tuple[list[int], list[int]]:
    """Runs of True within each value ``[offsets[i], offsets[i + 1])``, by walking the bytes."""
    starts, ends = [], []
    for first, stop in zip(offsets[:-1], offsets[1:], strict=True):
        inside = False
        for i in range(first, stop):
            if mask[i] and not inside:
                starts.append(i)
            if not mask[i] and inside:
                ends.append(i)
            inside = mask[i]
        if inside:
            ends.append(stop)
    return starts, ends


def test_spans_split_runs_where_values_end() -> None:
    rng = np.random.default_rng(6)
    for _ in range(500):
        n = int(rng.integers(0, 30))
        mask = rng.random(n) < rng.random()
        cuts = rng.integers(0, n + 1, size=int(rng.integers(0, 6)))  # repeats: empty values
        offsets = np.sort(np.concatenate([[0], cuts, [n]]))
        starts, ends = spans(mask, offsets)
        assert (starts.tolist(), ends.tolist()) == _python_spans(mask.tolist(), offsets.tolist())
