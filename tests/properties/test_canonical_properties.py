"""Canonical JSON (RFC 8785) as the audit trail uses it: properties over random values.

``audits.canonical`` wraps the ``rfc8785`` package, so comparing the two would
test nothing. These properties are checked against Python's own ``json``
instead: what the trail hashes must read back as the value it was given, not
depend on key order, and refuse what JSON cannot carry exactly.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.canonical import NotCanonicalizable, canonical_bytes, canonical_sha256

SETTINGS = settings(max_examples=100, deadline=None)
SAFE = 2**53 - 1

keys = st.text(max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(values)
def test_reads_back_as_the_value_it_was_given(value) -> None:
    # Integers in the output may stand for large floats (ES number formatting): read as floats.
    assert json.loads(canonical_bytes(value), parse_int=float) == value


@SETTINGS
@given(values)
def test_is_idempotent(value) -> None:
    once = canonical_bytes(value)
    assert canonical_bytes(json.loads(once, parse_int=float)) == once


@SETTINGS
@given(st.dictionaries(keys, values, min_size=2, max_size=6), st.randoms())
def test_does_not_depend_on_key_order(mapping: dict, rng) -> None:
    items = list(mapping.items())
    rng.shuffle(items)
    shuffled = dict(items)
    assert canonical_bytes(shuffled) == canonical_bytes(mapping)
    assert canonical_sha256(shuffled) == canonical_sha256(mapping)


# Keys in the Basic Multilingual Plane, without surrogates: there, RFC 8785's
# UTF-16 code-unit order is Python's code-point order, so json.dumps is a reference.
bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=8)
int_values = st.recursive(
    st.none() | st.booleans() | st.integers(-SAFE, SAFE) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(bmp_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(int_values)
def test_matches_sorted_compact_json_without_floats(value) -> None:
    reference = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(value) == reference.encode("utf-8")


@SETTINGS
@given(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.sampled_from(["bare", "in a list", "in a dict"]),
)
def test_refuses_non_finite_numbers(number: float, where: str) -> None:
    value = {"bare": number, "in a list": [1, number], "in a dict": {"x": {"y": number}}}[where]
    with pytest.raises(NotCanonicalizable):
        canonical_bytes(value)


@SETTINGS
@given(st.integers(min_value=SAFE + 1) | st.integers(max_value=-SAFE - 1))
def test_refuses_integers_a_double_cannot_hold(number: int) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_bytes({"n": number})
