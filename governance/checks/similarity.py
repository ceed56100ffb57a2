"""Vectorised similarity search: 64-bit hashing, numeric nearest neighbours, text MinHash/LSH.

Pure array code (no frames, no config) so the scan's shared indexes can be
built once and queried from any check. Per-row Python loops are avoided: at a
million rows a microsecond per row is a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.spatial import cKDTree

_U = np.uint64
# Fixed seeds: the same data must give the same findings on every machine and run.
_BAND_SEED = _U(0x632BE59BD9B4E019)
# ASCII letters and digits, and every byte of a multi-byte UTF-8 character, form words.
_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in ((ord("0"), ord("9")), (ord("a"), ord("z")), (ord("A"), ord("Z")), (0x80, 0xFF)):
    _WORD_BYTE[_lo : _hi + 1] = True
_GOLDEN = _U(0x9E3779B97F4A7C15)
# Bounds the temporary arrays of word hashing to a few hundred MB.
_CHUNK_ROWS = 100_000
# The same bound for text read in place, in bytes.
_CHUNK_BYTES = 1 << 20
# Neighbours looked at per sampled row to find its nearest non-identical row.
_NEIGHBOURS = 8
# Distances to the nearest other row are read at these quantiles (well
# estimated from a few thousand rows) and extrapolated down to the background
# rate as P(distance < r) ~ r^dimension, the dimension read from their ratio.
_LOW_QUANTILE, _HIGH_QUANTILE = 0.01, 0.1
# Caps the extrapolation, so the tolerance stays below half the 1% quantile
# however flat the distances look (e.g. on a lattice of discrete values).
_MAX_DIMENSION = 10.0
# Fewer distances than this give no usable estimate of "ordinarily close".
_MIN_DISTANCES = 200
# See NumericIndex: with more rows and dimensions than these the tree holds
# principal components (1M rows at 40 dimensions: 40 s exact, 2.5 s projected);
# each query then checks this many candidates at full dimension.
_PROJECT_ABOVE_ROWS = 100_000
_MAX_TREE_DIMENSIONS = 12
_CANDIDATES = 4
_PCA_SAMPLE = 20_000
# Candidate pairs whose Jaccard is computed at once (bounds it to ~20 MB).
_PAIRS_AT_ONCE = 16_384


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit affects every output bit."""
    x = np.array(values, dtype=np.uint64, copy=True)
    x ^= x >> _U(30)
    x *= _U(0xBF58476D1CE4E5B9)
    x ^= x >> _U(27)
    x *= _U(0x94D049BB133111EB)
    x ^= x >> _U(31)
    return x


def utf8_array(values: object) -> pa.LargeStringArray:
    """The values as one arrow string array: missing ones empty, others spelled by ``str``.

    Arrow-backed strings (pandas' default string dtype) are taken as they are,
    without making a Python object per value.
    """
    try:
        array = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        spelled = pd.Series(values).to_numpy(dtype=object, na_value="")
        array = pa.array([str(v) for v in spelled], type=pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return pc.fill_null(array, "") if array.null_count else array


def utf8_buffer(values: object) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes): the UTF-8 text of value i is ``data[offsets[i] : offsets[i + 1]]``.

    Read in place from :func:`utf8_array`'s buffers.
    """
    array = utf8_array(values)
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)
    offsets = offsets[array.offset : array.offset + len(array) + 1]
    if data_buffer is None:
        return offsets - offsets[0], np.empty(0, dtype=np.uint8)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def value_chunks(offsets: np.ndarray, target_bytes: int) -> Iterator[tuple[int, int]]:
    """``(first, stop)`` value ranges of about ``target_bytes`` bytes each, covering every value."""
    n = len(offsets) - 1
    cuts = np.searchsorted(offsets, np.arange(target_bytes, int(offsets[-1]), target_bytes))
    bounds = np.unique(np.concatenate([[0], cuts, [n]]))
    yield from zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)


def spans(mask: np.ndarray, local_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in ``mask``, split where a value ends.

    A run starts where the byte before is not in one or a value starts there,
    and ends likewise: flags over the bytes, no insertion into sorted arrays.
    """
    n = len(mask)
    value_start = np.zeros(n + 1, dtype=bool)
    value_start[local_offsets] = True
    outside = np.ones(n + 1, dtype=bool)  # outside[i]: byte i - 1 is not in a run
    outside[1:] = ~mask
    starts = np.flatnonzero(mask & (outside[:-1] | value_start[:-1]))
    # Byte i - 1 ends a run when byte i is not in one, or begins another value.
    after = np.empty(n + 1, dtype=bool)
    after[:n] = ~mask
    after[n] = True
    ends = np.flatnonzero(~outside & (after | value_start))
    return starts, ends


def word_hashes(values: object) -> tuple[np.ndarray, np.ndarray]:
    """Casefolded word hashes per value, as CSR: value i owns ``hashes[offsets[i]:offsets[i+1]]``.

    ``values`` is a column (missing values have no words). ASCII text is
    lowercased byte-wise in numpy (casefolding ASCII is lowercasing); other
    text goes through ``str.casefold``, which knows every script.
    """
    offsets, data = utf8_buffer(values)
    if len(data) and int(data.max()) >= 0x80:
        texts = [
            data[a:b].tobytes().decode("utf-8")
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
        return _python_word_hashes(texts)
    counts, hashes = [], []
    for first, stop in value_chunks(offsets, _CHUNK_BYTES):
        local = offsets[first : stop + 1] - offsets[first]
        chunk = lowered(data[offsets[first] : offsets[stop]])
        starts, ends = spans(_WORD_BYTE[chunk], local)
        # Words per value: the starts inside it (one search per value, not per word).
        counts.append(np.diff(np.searchsorted(starts, local)))
        hashes.append(_hash_words(chunk, starts, ends))
    return _csr(counts, hashes)


def _csr(counts: list[np.ndarray], hashes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not counts:
        return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.uint64)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return offsets, np.concatenate(hashes)


def _python_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    counts, hashes = [], []
    for start in range(0, len(texts), _CHUNK_ROWS):
        chunk_counts, chunk_hashes = _chunk_word_hashes(texts[start : start + _CHUNK_ROWS])
        counts.append(chunk_counts)
        hashes.append(chunk_hashes)
    return _csr(counts, hashes)


def _chunk_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:  # NUL separates texts, so none may hold one
        joined = "\x00".join(t.replace("\x00", " ") for t in texts)
    data = np.frombuffer(joined.casefold().encode("utf-8"), dtype=np.uint8)
    edges = np.diff(_WORD_BYTE[data].view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    text_of_word = np.searchsorted(np.flatnonzero(data == 0), starts)
    counts = np.bincount(text_of_word, minlength=len(texts))
    return counts, _hash_words(data, starts, ends)


def _hash_words(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash each word ``data[start:end]`` from its length, first 16 and last 8 bytes.

    The bytes are read 8 at a time through an unaligned sliding uint64 view, so
    the work is per word, not per byte. Words up to 16 bytes hash exactly.
    """
    padded = np.concatenate([data, np.zeros(16, dtype=np.uint8)])
    window = np.ndarray(shape=(len(data) + 8,), dtype="<u8", buffer=padded, strides=(1,))
    lengths = (ends - starts).astype(np.uint64)
    hashes = mix64(_masked(window[starts], lengths) ^ (lengths * _GOLDEN))
    second = _masked(window[starts + 8], np.where(lengths > 8, lengths - _U(8), _U(0)))
    hashes = mix64(hashes ^ second)
    last = np.where(lengths > 16, window[np.maximum(ends - 8, 0)], _U(0))
    return mix64(hashes ^ last)


def lowered(data: np.ndarray) -> np.ndarray:
    """UTF-8 bytes with ASCII capitals lowered (multi-byte characters are left as they are).

    Arithmetic, not a table lookup: about 4x faster over tens of MB. A capital
    lacks bit 5 (0x20), so setting it lowers the letter.
    """
    capital = (data - np.uint8(ord("A"))) < np.uint8(26)  # bytes below "A" wrap around
    return data | (capital.view(np.uint8) << np.uint8(5))


def string_hashes(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each whole value ``data[offsets[i]:offsets[i + 1]]``, 8 bytes a step.

    Each step works on the values still longer than the bytes hashed so far,
    so the cost is per 8 bytes of text, not per byte.
    """
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    window = np.ndarray(shape=(len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    starts = offsets[:-1]
    lengths = np.diff(offsets).astype(np.uint64)
    hashes = mix64(lengths * _GOLDEN)
    active = np.flatnonzero(lengths > 0)
    done = _U(0)
    while len(active):
        left = lengths[active] - done
        hashes[active] = mix64(hashes[active] ^ _masked(window[starts[active] + int(done)], left))
        done += _U(8)
        active = active[lengths[active] > done]
    return hashes


def _masked(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Keep the first ``lengths`` (<= 8 counts as 8) little-endian bytes of each uint64."""
    shift = np.minimum(lengths, _U(7)) * _U(8)
    mask = np.where(lengths >= 8, ~_U(0), (_U(1) << shift) - _U(1))
    return words & mask


@dataclass(frozen=True, eq=False)
class NumericIndex:
    """KD-tree over train points, one far-apart slab per exact key.

    A point's key becomes one extra coordinate, ``key position x spacing``, with
    the spacing larger than any distance inside a slab: points with different
    keys are then never within tolerance, and one tree serves every key.

    KD-trees slow down steeply with dimension, so on large inputs with more
    than ``_MAX_TREE_DIMENSIONS`` the tree holds the leading principal
    components. An orthogonal projection never lengthens a distance, so no pair
    within tolerance is lost; candidates are checked at full dimension. The
    tolerance is then read from projected distances, an approximation.
    """

    tree: cKDTree
    # The distinct train keys, sorted, and the slab of each: a lookup by binary
    # search (a hash index over a million keys would hold ~32 MB more).
    sorted_keys: np.ndarray
    slabs: np.ndarray
    spacing: float
    tolerance: float | None  # None: too few distinct neighbours to say what is "near"
    # Train points at full dimension when the tree holds projections; without
    # a projection they are the tree's own coordinates (less the key), not copied.
    points: np.ndarray | None
    axes: np.ndarray | None  # orthonormal rows projected onto; None: no projection

    @classmethod
    def build(
        cls,
        slotted: np.ndarray,
        keys: np.ndarray,
        *,
        background_rate: float,
        sample: int,
        seed: int,
    ) -> NumericIndex:
        """The index over train's points: ``slotted[:, :-1]``, one row per point.

        The last column of ``slotted`` is free: each point's key coordinate is
        written there, and the tree keeps the array as its data, so that a
        million points are not held twice (~80 MB more) while it is built.
        """
        n, dimensions = slotted.shape[0], slotted.shape[1] - 1
        points = slotted[:, :dimensions]
        large = n > _PROJECT_ABOVE_ROWS and dimensions > _MAX_TREE_DIMENSIONS
        axes = _principal_axes(points, seed) if large else None
        projected = points if axes is None else points @ axes.T
        codes, uniques = pd.factorize(keys)
        spread = float(np.sqrt(np.sum(np.ptp(projected, axis=0) ** 2))) if n else 0.0
        spacing = 2.0 ** math.ceil(math.log2(2.0 * spread + 1.0))
        if axes is None:
            np.multiply(codes, spacing, out=slotted[:, dimensions])
            data = slotted
        else:
            data = np.column_stack([projected, codes * spacing])
        del projected
        tree = cKDTree(data)
        del data
        tolerance = _tolerance(tree, spacing, background_rate, sample, seed)
        kept = None if axes is None else points
        order = np.argsort(uniques)
        slabs = order.astype(np.min_scalar_type(-len(uniques)))  # int64 would be 8 B a key
        return cls(tree, uniques[order], slabs, spacing, tolerance, kept, axes)

    def match(self, points: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query rows, nearest train rows) for queries strictly within tolerance."""
        codes = self._slabs_of(keys)
        known = np.flatnonzero(codes >= 0)
        if self.tolerance is None or not len(known):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        queries = points[known]
        projected = queries if self.axes is None else queries @ self.axes.T
        _, nearest = self.tree.query(
            np.column_stack([projected, codes[known] * self.spacing]),
            k=_CANDIDATES,
            distance_upper_bound=self.tolerance,
            workers=-1,
        )
        query, rank = np.nonzero(nearest < self.tree.n)  # missing neighbours come back as n
        train = nearest[query, rank]
        candidates = self.tree.data[train, :-1] if self.points is None else self.points[train]
        distance = np.sqrt(((candidates - queries[query]) ** 2).sum(axis=1))
        close = distance < self.tolerance
        query, train, distance = query[close], train[close], distance[close]
        best = np.lexsort((distance, query))
        first = np.ones(len(best), dtype=bool)
        first[1:] = query[best][1:] != query[best][:-1]
        best = best[first]
        return known[query[best]], train[best].astype(np.int64)

    def _slabs_of(self, keys: np.ndarray) -> np.ndarray:
        """The slab of each key, -1 for a key no train point has."""
        if not len(self.sorted_keys):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.sorted_keys, keys), len(self.sorted_keys) - 1)
        return np.where(self.sorted_keys[at] == keys, self.slabs[at], -1)


def _principal_axes(points: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(points), size=min(_PCA_SAMPLE, len(points)), replace=False)
    sample = points[rows] - points[rows].mean(axis=0)
    return np.linalg.svd(sample, full_matrices=False)[2][:_MAX_TREE_DIMENSIONS]


def _tolerance(
    tree: cKDTree, spacing: float, background_rate: float, sample: int, seed: int
) -> float | None:
    """The distance within which an ordinary row has a neighbour at ``background_rate``.

    Identical rows (distance 0) and rows in other key slabs are not neighbours
    here: duplicates are a different finding and slabs never match.
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(tree.n, size=min(sample, tree.n), replace=False)
    k = min(_NEIGHBOURS, tree.n)
    if k < 2:
        return None
    distance, _ = tree.query(tree.data[rows], k=k, workers=-1)
    positive = distance > 0
    has_positive = positive.any(axis=1)
    nearest = distance[has_positive, positive[has_positive].argmax(axis=1)]
    nearest = nearest[nearest < spacing / 2]
    if len(nearest) < _MIN_DISTANCES:
        return None
    low, high = np.quantile(nearest, [_LOW_QUANTILE, _HIGH_QUANTILE])
    ratio = math.log(high / low) if high > low else 0.0
    dimension = math.log(_HIGH_QUANTILE / _LOW_QUANTILE) / ratio if ratio else _MAX_DIMENSION
    dimension = min(max(dimension, 1.0), _MAX_DIMENSION)
    return float(low) * (background_rate / _LOW_QUANTILE) ** (1.0 / dimension)


@dataclass(frozen=True, eq=False)
class TextLsh:
    """MinHash LSH over word sets; candidates are verified by exact Jaccard.

    Each band hashes ``rows_per_band`` min-hashes; a query shares a band bucket
    with a train row of Jaccard J with probability 1 - (1 - J^r)^b, so pairs
    above the threshold are found with high probability and others are rarely
    looked at. Per bucket only one train row is tried, the first (lowest row)
    train row that falls in it: the best match for a query is still found
    through another band unless other train rows crowd every one of its buckets.

    The tables hold the queries' buckets, not train's: train is streamed
    through them in chunks (see :meth:`BandTables.offer`), so its word hashes
    and signatures are never all in memory at once.
    """

    threshold: float
    multipliers: np.ndarray  # (bands, rows_per_band) odd uint64: one permutation per min-hash

    @classmethod
    def seeded(cls, threshold: float, bands: int, rows_per_band: int, seed: int) -> TextLsh:
        random = np.random.default_rng(seed).bytes(bands * rows_per_band * 8)
        multipliers = np.frombuffer(random, dtype=np.uint64).reshape(bands, rows_per_band) | _U(1)
        return cls(threshold, multipliers)

    def signatures(self, offsets: np.ndarray, words: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One hash per (row, band) of the band's min-hashes; ``rows`` must have words."""
        return _band_hashes(offsets, words, rows, self.multipliers)

    def best(
        self,
        rows: np.ndarray,
        candidates: np.ndarray,
        query: tuple[np.ndarray, np.ndarray, np.ndarray],
        train: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query rows, most similar train rows, Jaccard) for queries at or above threshold.

        ``rows`` are the query rows that have signatures; ``candidates`` (index
        into ``rows``, train row) pairs, e.g. from :meth:`BandTables.candidates`;
        ``query`` and ``train`` are (offsets, words, rows): the words of at
        least the candidate rows of each side, ``rows`` sorted.
        """
        if not len(candidates):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
        query_offsets, query_words, query_of = query
        train_offsets, train_words, train_rows = train
        pairs = np.unique(np.column_stack([rows[candidates[:, 0]], candidates[:, 1]]), axis=0)
        query_rows, train_of = pairs[:, 0], pairs[:, 1]
        query_at = np.searchsorted(query_of, query_rows)
        train_at = np.searchsorted(train_rows, train_of)
        # In slices: every pair's words are gathered and hashed (~1 KB a pair).
        similarity = np.concatenate(
            [
                _jaccard(
                    query_offsets,
                    query_words,
                    query_at[part],
                    train_offsets,
                    train_words,
                    train_at[part],
                )
                for first in range(0, len(pairs), _PAIRS_AT_ONCE)
                for part in [slice(first, first + _PAIRS_AT_ONCE)]
            ]
        )
        keep = similarity >= self.threshold
        query_rows, train_of, similarity = query_rows[keep], train_of[keep], similarity[keep]
        best = np.lexsort((-similarity, query_rows))
        first = np.ones(len(best), dtype=bool)
        first[1:] = query_rows[best][1:] != query_rows[best][:-1]
        best = best[first]
        return query_rows[best], train_of[best], similarity[best]


class BandTables:
    """Per band, the distinct band hashes of the queries and the first train row in each bucket.

    Train rows are offered in ascending order, chunk by chunk; a bucket keeps
    the first train row that reaches it. A bit filter per band (2^24 bits, 2
    MiB) turns away almost every train row, so the few left are looked up by
    binary search in the sorted hashes (no hash table: pandas' cost ~8 MB
    per band at 210,000 queries).
    """

    _FILTER_BITS = 24

    def __init__(self, signatures: np.ndarray) -> None:
        self._codes, self._tables, self._filters, self._first = [], [], [], []
        mask = _U((1 << self._FILTER_BITS) - 1)
        for band in range(signatures.shape[1]):
            uniques, codes = np.unique(signatures[:, band], return_inverse=True)
            codes = codes.astype(np.min_scalar_type(len(uniques)))  # int64 would be 8 B a query
            bits = np.zeros(1 << (self._FILTER_BITS - 3), dtype=np.uint8)
            low = (uniques & mask).astype(np.int64)
            np.bitwise_or.at(bits, low >> 3, (1 << (low & 7)).astype(np.uint8))
            self._codes.append(codes)
            self._tables.append(uniques)
            self._filters.append(bits)
            self._first.append(np.full(len(uniques), -1, dtype=np.int64))

    def offer(self, rows: np.ndarray, signatures: np.ndarray) -> None:
        """Train ``rows`` (ascending, after every row offered before) and their signatures."""
        mask = _U((1 << self._FILTER_BITS) - 1)
        for band, table, bits, first in zip(
            range(signatures.shape[1]), self._tables, self._filters, self._first, strict=True
        ):
            band_hashes = signatures[:, band]
            low = (band_hashes & mask).astype(np.int64)
            maybe = np.flatnonzero((bits[low >> 3] >> (low & 7).astype(np.uint8)) & 1)
            position = np.minimum(np.searchsorted(table, band_hashes[maybe]), len(table) - 1)
            hit = table[position] == band_hashes[maybe]
            position, train_rows = position[hit], rows[maybe[hit]]
            new = first[position] < 0
            buckets, earliest = np.unique(position[new], return_index=True)
            first[buckets] = train_rows[new][earliest]

    def candidates(self) -> np.ndarray:
        """(query, train row) pairs, one per band whose bucket a train row reached."""
        pairs = []
        for codes, first in zip(self._codes, self._first, strict=True):
            train_rows = first[codes]
            found = np.flatnonzero(train_rows >= 0)
            pairs.append(np.column_stack([found, train_rows[found]]))
        return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)


def _band_hashes(
    offsets: np.ndarray, words: np.ndarray, rows: np.ndarray, multipliers: np.ndarray
) -> np.ndarray:
    out = np.empty((len(rows), multipliers.shape[0]), dtype=np.uint64)
    if not len(rows):
        return out
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    starts = offsets[nonempty]
    where = np.searchsorted(nonempty, rows)
    permuted = np.empty_like(words)
    for band, band_multipliers in enumerate(multipliers):
        signature = np.full(len(rows), _BAND_SEED, dtype=np.uint64)
        for multiplier in band_multipliers:
            # x -> a*x mod 2^64 (a odd) permutes the word hashes; the min is a min-hash.
            np.multiply(words, multiplier, out=permuted)
            signature = signature * _GOLDEN + np.minimum.reduceat(permuted, starts)[where]
        out[:, band] = mix64(signature)
    return out


def _jaccard(
    offsets_a: np.ndarray,
    words_a: np.ndarray,
    rows_a: np.ndarray,
    offsets_b: np.ndarray,
    words_b: np.ndarray,
    rows_b: np.ndarray,
) -> np.ndarray:
    """Exact Jaccard similarity of the word sets of each pair (rows_a[i], rows_b[i])."""
    pair_a, values_a = _gather(offsets_a, words_a, rows_a)
    pair_b, values_b = _gather(offsets_b, words_b, rows_b)
    n = len(rows_a)
    size_a = _distinct_per_group(pair_a, values_a, n)
    size_b = _distinct_per_group(pair_b, values_b, n)
    union = _distinct_per_group(
        np.concatenate([pair_a, pair_b]), np.concatenate([values_a, values_b]), n
    )
    return (size_a + size_b - union) / np.maximum(union, 1)


def _gather(
    offsets: np.ndarray, words: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Words of ``rows`` concatenated, with the position in ``rows`` each came from."""
    lengths = offsets[rows + 1] - offsets[rows]
    pair = np.repeat(np.arange(len(rows)), lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return pair, words[np.repeat(offsets[rows], lengths) + within]


def _distinct_per_group(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Number of distinct values per group, by hashing (group, value) pairs: linear time."""
    keys = pd.Series(mix64(values ^ mix64(groups.astype(np.uint64))))
    return np.bincount(groups[~keys.duplicated().to_numpy()], minlength=n_groups)


def isin(values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """``np.isin`` by hash table: linear time, ~10x faster than sorting at a million rows."""
    return pd.Series(values).isin(of).to_numpy()
