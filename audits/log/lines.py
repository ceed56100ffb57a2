"""Reading an entry's chain fields from its line, cheaply: verification does it for every line."""

from __future__ import annotations

import json

from pydantic_core import from_json

from stores.local import Link

_ENTRY_KEYS = frozenset({"seq", "time", "prev", "event"})


class Malformed(ValueError):
    """A line is not an audit entry; the message says why."""


def entry_link(data: bytes) -> Link:
    """``(seq, prev)`` of an entry line; :class:`Malformed` if it is not an entry."""
    record = _parse(data)
    if not isinstance(record, dict) or record.keys() != _ENTRY_KEYS:
        raise Malformed("not an audit entry (expects exactly event, prev, seq, time)")
    seq, prev = record["seq"], record["prev"]
    if type(seq) is not int or seq < 0:
        raise Malformed("seq is not a non-negative integer")
    if not isinstance(prev, str) or not isinstance(record["time"], str):
        raise Malformed("prev or time is not a string")
    if not isinstance(record["event"], dict):
        raise Malformed("event is not an object")
    return Link(seq, prev)


def _parse(data: bytes) -> object:
    """The JSON value of a line, as ``json.loads`` reads it.

    pydantic-core's parser (jiter) reads the bytes about twice as fast; it is stricter
    (it refuses a lone surrogate escape, which ``json.loads`` accepts), never laxer, so
    whatever it refuses goes to ``json.loads``, which decides.
    """
    try:
        return from_json(data, cache_strings=False)
    except ValueError:
        pass
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise Malformed("not valid JSON") from exc


def entry_link_or_none(data: bytes) -> Link | None:
    """The store's view of a line: its chain fields, or None if it is not an entry."""
    try:
        return entry_link(data)
    except Malformed:
        return None
