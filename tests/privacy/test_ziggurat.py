"""The ziggurat behind the DP noise: its layers, each of its paths on crafted words, and
the law of what each path returns, against the normal (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from privacy import ziggurat
from privacy.secure_gaussian import ChaChaStream
from privacy.ziggurat import LAYERS, R, V, fill_normals, tables

TEST_KEY = bytes(range(32))
GRID = 2**52


def density(x: float) -> float:
    return math.exp(-0.5 * x * x)


def edges() -> np.ndarray:
    """x_i, each layer's right edge (x_0 = 0: the top)."""
    x = tables().wi * GRID
    x[0] = 0.0
    return x


def first_word(layer: int, point: int, negative: bool = False) -> np.uint64:
    """The word that picks ``layer`` and the ``point``-th grid point across it."""
    return np.uint64((point << 9) | (int(negative) << 8) | layer)


def uniform_word(u: float) -> np.uint64:
    """A word whose 53-bit uniform is ``u`` (rounded down to the grid)."""
    return np.uint64(int(u * 2**53) << 11)


def draw(words: list[np.uint64]) -> float | None:
    """One draw from exactly these words; None when they ran out (the draw was rejected
    and wanted more)."""
    out = np.empty(1)
    used = fill_normals(out, 1.0, np.array(words, dtype=np.uint64))
    return None if used < 0 else float(out[0])


def random_words(count: int, seed: int = 0) -> np.ndarray:
    key = TEST_KEY[:-1] + bytes([seed])
    return np.frombuffer(ChaChaStream(key).read(8 * count), dtype=np.uint64)


def test_the_layers_have_equal_areas_and_close() -> None:
    x = edges()
    f = np.array([density(v) for v in x])
    areas = x[1:] * (f[:-1] - f[1:])  # layer i: [0, x_i] x [f(x_i), f(x_{i-1})]
    assert np.allclose(areas, V, rtol=1e-11, atol=0)
    base = R * density(R) + math.sqrt(2 * math.pi) * stats.norm.sf(R)
    assert base == pytest.approx(V, rel=1e-12)
    zig = tables()
    assert zig.wi[0] * GRID == pytest.approx(V / density(R), rel=1e-15)
    assert np.allclose(zig.fi[1:], f[1:], rtol=1e-15) and zig.fi[0] == 1.0
    inner = (
        [int(GRID * R / (V / density(R)))]
        + [0]
        + [int(GRID * x[i - 1] / x[i]) for i in range(2, LAYERS)]
    )
    assert zig.ki.tolist() == inner
    assert not zig.wi.flags.writeable


def test_compiled_and_python_runs_agree_bit_for_bit() -> None:
    """numba's integer and float semantics against Python's, on the same code: a signed or
    unsigned mix-up in the bit fields would show here."""
    words = random_words(12_000)
    for dtype in (np.float64, np.float32):
        compiled, python = np.empty(10_000, dtype=dtype), np.empty(10_000, dtype=dtype)
        used = fill_normals(compiled, 2.5, words)
        assert fill_normals(python, 2.5, words, compiled=False) == used
        assert np.array_equal(compiled, python)
    assert 10_000 < used < 10_500  # one word a draw, more for ~1% of them


def test_each_path_on_crafted_words() -> None:
    zig, x = tables(), edges()
    # The fast path: the point times the layer's width, the sign from its bit.
    assert draw([first_word(7, 12_345)]) == 12_345 * zig.wi[7]
    assert draw([first_word(7, 12_345, negative=True)]) == -12_345 * zig.wi[7]
    # The top layer has no fast path; a wedge point under the density is accepted...
    point = GRID // 2
    assert draw([first_word(1, point), uniform_word(0.0)]) == point * zig.wi[1]
    # ... and one above it is not (the draw wants another word).
    assert draw([first_word(1, GRID - 1), uniform_word(1 - 2**-53)]) is None
    middle = int(zig.ki[100]) + 1000  # just past the inner rectangle of layer 100
    assert x[99] < draw([first_word(100, middle), uniform_word(0.0)]) < x[100]
    # The tail: R plus an Exponential(R) offset, kept with probability exp(-offset^2 / 2).
    offset = 5.0
    u = -math.expm1(-R * offset)
    value = draw([first_word(0, GRID - 1), uniform_word(u), uniform_word(1 - 2**-53)])
    assert value == pytest.approx(R + offset, abs=1e-9)  # beyond 8.6 sigma: no cutoff
    negative = draw([first_word(0, GRID - 1, True), uniform_word(u), uniform_word(1 - 2**-53)])
    assert negative == -value
    # The largest offset that can be kept: 2 * 53 ln 2 > offset^2, i.e. ~12.2 sigma.
    limit = math.sqrt(2 * 53 * math.log(2))
    assert draw([first_word(0, GRID - 1), uniform_word(-math.expm1(-R * (limit + 0.01))),
                 uniform_word(1 - 2**-53)]) is None  # fmt: skip
    kept = draw([first_word(0, GRID - 1), uniform_word(-math.expm1(-R * (limit - 0.05))),
                 uniform_word(1 - 2**-53)])  # fmt: skip
    assert kept is not None and kept > 12.0


def _forced(first: np.ndarray, uniforms: int, seed: int) -> np.ndarray:
    """Draws that each start with ``first[k]`` and then take ``uniforms`` real uniform
    words: the accepted ones (the law of that path given acceptance)."""
    extra = random_words(len(first) * uniforms, seed).reshape(len(first), uniforms)
    values = (draw([word, *more]) for word, more in zip(first, extra, strict=True))
    return np.array([v for v in values if v is not None])


def _points(count: int, low: int, seed: int) -> np.ndarray:
    """Grid points uniform in [low, 2^52), from the keystream."""
    words = random_words(count, seed)
    return low + (words >> np.uint64(12)) % np.uint64(GRID - low)


@pytest.mark.parametrize("layer", [1, 100, 255])
def test_wedge_draws_follow_the_density_above_the_layer_floor(layer: int) -> None:
    """Given the wedge of layer i and acceptance, x has density f(x) - f(x_i) on
    [x_{i-1}, x_i]: the ziggurat is exact only if this holds."""
    zig, x = tables(), edges()
    points = _points(20_000, int(zig.ki[layer]), seed=layer)
    first = np.array([first_word(layer, int(p)) for p in points], dtype=np.uint64)
    accepted = _forced(first, 1, seed=(layer + 128) % 256)
    low, high, floor = x[layer - 1], x[layer], zig.fi[layer]

    def mass(t: float) -> float:
        return math.sqrt(2 * math.pi) * (stats.norm.cdf(t) - stats.norm.cdf(low)) - floor * (
            t - low
        )

    total = mass(high)
    assert len(accepted) > 5_000
    assert stats.kstest(accepted, lambda t: np.vectorize(mass)(t) / total).pvalue > 1e-3


@pytest.mark.parametrize("beyond", [0.0, 2.9, 4.5])
def test_tail_draws_follow_the_normal_tail(beyond: float) -> None:
    """Tail draws past R + ``beyond`` must follow the normal conditioned on x > R + beyond
    (up to ~6.5 and ~8.2 sigma for the last two). Importance sampling: the offset's
    uniform is drawn where the offset is >= ``beyond``, and the height's where the height
    is >= beyond^2 / 2, below every height that keeps such an offset; given both, an
    offset e is kept with probability exp(-(e^2 - beyond^2) / 2), so what is kept has
    density proportional to exp(-R e) exp(-e^2 / 2), i.e. to f(R + e)."""
    floor = beyond * beyond / 2
    offsets = -math.expm1(-R * beyond) + math.exp(-R * beyond) * _uniforms(20_000, seed=7)
    heights = -math.expm1(-floor) + math.exp(-floor) * _uniforms(20_000, seed=8)
    values = []
    for u, v in zip(offsets, heights, strict=True):
        value = draw([first_word(0, GRID - 1), uniform_word(u), uniform_word(v)])
        if value is not None:
            values.append(value)
    kept = integrate.quad(
        lambda e: R * math.exp(-R * (e - beyond)) * math.exp(-(e * e - beyond * beyond) / 2),
        beyond,
        np.inf,
    )[0]
    expected = len(offsets) * kept
    assert expected > 5_000 and abs(len(values) - expected) < 5 * math.sqrt(expected)
    conditioned = stats.truncnorm(a=R + beyond, b=np.inf)
    assert stats.kstest(values, conditioned.cdf).pvalue > 1e-3
    assert min(values) >= R + beyond - 1e-9


def _uniforms(count: int, seed: int) -> np.ndarray:
    """53-bit uniforms on [0, 1) from the keystream, as the sampler forms them."""
    return (random_words(count, seed) >> np.uint64(11)) * 2.0**-53


def test_a_short_word_supply_fails_instead_of_returning_partial_draws() -> None:
    out = np.empty(100)
    assert fill_normals(out, 1.0, random_words(50)) == -1
    assert ziggurat.fill_normals(np.empty(0), 1.0, np.empty(0, dtype=np.uint64)) == 0
