"""Plain JSON records chained by the local record file, for the store tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stores.local import GENESIS, Link, RecordBuilder


def link(line: bytes) -> Link | None:
    """A record's place in the chain, or None for a line that is not a record."""
    try:
        record = json.loads(line)
        return Link(record["seq"], record["prev"])
    except (ValueError, KeyError, TypeError):
        return None


def record(body: str) -> RecordBuilder:
    def build(seq: int, prev: str) -> bytes:
        return json.dumps({"body": body, "prev": prev, "seq": seq}).encode()

    return build


def chained(path: Path) -> list[dict]:
    """The records of ``path``, after checking that they chain from the genesis hash."""
    records, prev = [], GENESIS
    for seq, line in enumerate(path.read_bytes().splitlines()):
        entry = json.loads(line)
        assert (entry["seq"], entry["prev"]) == (seq, prev), line
        prev = hashlib.sha256(line).hexdigest()
        records.append(entry)
    return records
