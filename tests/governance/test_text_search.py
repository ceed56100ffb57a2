"""The streamed text near-duplicate search: chunking changes nothing, Jaccard is exact.

Train is hashed and offered to the queries' LSH buckets chunk by chunk, and
candidate pairs are verified in slices; these tests hold the result to one
pass over all of train and all pairs at once, and to word sets compared in
plain Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import governance.checks.frames as frames
import governance.checks.similarity as similarity_module
from governance.checks import CheckConfig
from governance.checks.scan import prepare_scan

WORDS = np.array([f"w{i:04d}" for i in range(3000)])
CONFIG = CheckConfig(label="label")


def _frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    zipf = 1.0 / (np.arange(len(WORDS)) + 10.0)
    words = rng.choice(WORDS, size=(n, 12), p=zipf / zipf.sum())
    return pd.DataFrame(
        {
            "x": rng.normal(size=n).round(3),
            "note": [" ".join(row) for row in words],
            "label": rng.integers(0, 2, size=n),
        }
    )


@pytest.fixture
def planted() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame], np.ndarray]:
    """Train, test and a reference; test rows 0..39 copy train rows (one word changed)."""
    rng = np.random.default_rng(5)
    train, test, reference = _frame(3000, rng), _frame(600, rng), _frame(200, rng)
    sources = rng.choice(len(train), size=40, replace=False)
    for row, source in enumerate(sources):
        words = train.at[source, "note"].split()
        words[row % len(words)] = "changed"
        test.at[row, "note"] = " ".join(words)
    # Train holds exact copies of a source's note further on: the first is the candidate.
    train.loc[2990:2994, "note"] = train.loc[sources[:5], "note"].to_numpy()
    reference.loc[:9, "note"] = train.loc[sources[10:20], "note"].to_numpy()
    return train, test, {"public": reference.drop(columns="label")}, sources


def _search(data: tuple, chunk_rows: int, monkeypatch: pytest.MonkeyPatch) -> list:
    """Matches of test and the reference; train and candidate pairs ``chunk_rows`` at a time."""
    train, test, references, _ = data
    monkeypatch.setattr(frames, "_TEXT_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(similarity_module, "_PAIRS_AT_ONCE", chunk_rows)
    ctx = prepare_scan(train, test, references, config=CONFIG)
    near = ctx.text_near
    assert near is not None
    return [near.match(frame) for frame in (ctx.test, *ctx.references.values())]


def _jaccard(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    return len(x & y) / len(x | y)


def test_chunked_train_gives_what_one_pass_gives(planted, monkeypatch) -> None:
    whole = _search(planted, 10**9, monkeypatch)
    for chunk_rows in (1, 7, 1000):
        chunked = _search(planted, chunk_rows, monkeypatch)
        for (rows, train_rows, similarity), expected in zip(chunked, whole, strict=True):
            assert np.array_equal(rows, expected[0])
            assert np.array_equal(train_rows, expected[1])
            assert np.array_equal(similarity, expected[2])


def test_planted_copies_found_with_their_source_and_exact_jaccard(planted, monkeypatch) -> None:
    train, test, references, sources = planted
    (rows, train_rows, similarity), (ref_rows, ref_train, _) = _search(planted, 7, monkeypatch)
    assert rows.tolist() == list(range(40))
    # The first five sources have a later exact copy in train; the first train row is kept.
    assert train_rows.tolist() == sources.tolist()
    pairs = zip(rows, train_rows, strict=True)
    expected = [_jaccard(test.at[r, "note"], train.at[t, "note"]) for r, t in pairs]
    assert np.allclose(similarity, expected)
    assert min(expected) >= CONFIG.text_jaccard
    assert ref_rows.tolist() == list(range(10))
    assert ref_train.tolist() == sources[10:20].tolist()
