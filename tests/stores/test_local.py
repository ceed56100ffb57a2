"""The local record file: hash chain, one write per append, and the one torn-tail rule."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from stores.errors import DamagedTail
from stores.local import GENESIS, Link, LocalRecordFile, RecordBuilder, SetAside, Torn

LEGACY = Path(__file__).resolve().parent / "legacy"


def _link(line: bytes) -> Link | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or type(record.get("seq")) is not int:
        return None
    return Link(record["seq"], record["prev"])


def _record(body: str) -> RecordBuilder:
    def build(seq: int, prev: str) -> bytes:
        return json.dumps({"body": body, "prev": prev, "seq": seq}, sort_keys=True).encode()

    return build


def _recovery(aside: SetAside) -> RecordBuilder:
    return _record(f"recovery {aside.offset} {aside.length} {aside.sha256} {aside.moved_to.name}")


@pytest.fixture
def store(tmp_path: Path) -> LocalRecordFile:
    return LocalRecordFile(tmp_path / "records" / "r.jsonl", _link)


def _append(store: LocalRecordFile, *bodies: str, **options) -> list[bytes]:
    with store.appending() as appender:
        return appender.append([_record(b) for b in bodies], recovery=_recovery, **options)


def test_records_chain_by_sequence_and_hash_of_the_previous_line(store: LocalRecordFile) -> None:
    first = _append(store, "a", "b")
    second = _append(store, "c")
    lines = store.path.read_bytes().splitlines()
    assert lines == first + second
    prev = GENESIS
    for seq, line in enumerate(lines):
        assert _link(line) == Link(seq, prev)
        prev = hashlib.sha256(line).hexdigest()


def test_a_torn_tail_is_set_aside_0600_truncated_and_recorded(store: LocalRecordFile) -> None:
    _append(store, "a")
    intact = store.path.read_bytes()
    torn = b'{"body": "b", "pr'
    store.path.write_bytes(intact + torn)
    with store.reading() as reader:
        assert reader is not None
        assert reader.tail.torn == Torn(len(intact), len(torn), "no trailing newline")

    written = _append(store, "c")

    aside = store.path.with_name("r.jsonl.torn-1")
    assert aside.read_bytes() == torn
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    digest = hashlib.sha256(torn).hexdigest()
    expected = f"recovery {len(intact)} {len(torn)} {digest} {aside.name}"
    assert json.loads(written[0])["body"] == expected
    assert store.path.read_bytes() == intact + b"".join(line + b"\n" for line in written)
    assert [_link(line).seq for line in store.path.read_bytes().splitlines()] == [0, 1, 2]


def test_a_terminated_line_that_is_not_a_record_is_torn_too(store: LocalRecordFile) -> None:
    _append(store, "a")
    store.path.write_bytes(store.path.read_bytes() + b"garbage\n")
    with store.reading() as reader:
        assert reader.tail.torn.reason == "not a valid entry"


def test_two_damaged_lines_are_refused_and_nothing_is_touched(store: LocalRecordFile) -> None:
    _append(store, "a")
    damaged = store.path.read_bytes() + b"garbage\n{tor"
    store.path.write_bytes(damaged)
    with pytest.raises(DamagedTail, match="last two lines"):
        _append(store, "b")
    assert store.path.read_bytes() == damaged
    assert not store.path.with_name("r.jsonl.torn-1").exists()


def test_an_owner_may_refuse_to_repair_a_range_it_protects(store: LocalRecordFile) -> None:
    _append(store, "a")
    damaged = store.path.read_bytes() + b"{tor"

    def guard(torn: Torn) -> None:
        raise RuntimeError(f"protected up to {torn.offset + 1}")

    store.path.write_bytes(damaged)
    with pytest.raises(RuntimeError, match="protected"):
        _append(store, "b", guard=guard)
    assert store.path.read_bytes() == damaged


def test_a_file_without_a_chain_sets_aside_an_unterminated_line(tmp_path: Path) -> None:
    plain = LocalRecordFile(tmp_path / "history.jsonl", None)
    plain.path.write_bytes(b"one\ntw")
    with plain.locked(), plain.writing() as appender:
        appender.append([lambda seq, prev: b"three"])
    assert plain.path.read_bytes() == b"one\nthree\n"
    assert (tmp_path / "history.jsonl.torn-1").read_bytes() == b"tw"


def test_search_finds_lines_by_index_across_chunks(store: LocalRecordFile) -> None:
    bodies = [("needle " if n % 997 == 0 else "hay ") + "x" * 3000 for n in range(2000)]
    _append(store, *bodies)
    with store.reading() as reader:
        found = [index for index, _ in reader.search(b"needle", 0, reader.tail.end)]
    assert found == [n for n in range(2000) if n % 997 == 0]
