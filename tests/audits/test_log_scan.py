"""The fast paths of the audit log give exactly what the plain ones give.

Verification of a large log runs in forked workers over ranges of whole lines;
here the threshold is lowered so that a small log is split too, and every
tamper kind must give the same report, problem for problem and message for
message, as the single-process scan. Entry lines are assembled around the
event's canonical bytes (through ``json.dumps`` where it agrees with RFC 8785)
instead of canonicalising the whole entry: they must stay byte for byte what
the rfc8785 package gives.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.canonical import NotCanonicalizable, canonical_bytes
from audits.keys import PublicKey, SigningKey
from audits.log import (
    AuditEntry,
    AuditLog,
    VerifyReport,
    load_checkpoint,
    verification,
)
from audits.log.lines import Malformed, entry_link
from audits.log.records import event_bytes
from audits.merkle import CompactRange
from stores.local import LocalRecordFile
from tests.audits.events import command_event

REPO = Path(__file__).resolve().parents[2]
ENTRIES = 30


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, signer: SigningKey) -> Path:
    """A log of 30 entries, checkpointed every 7, with an exported anchor at 14."""
    directory = tmp_path_factory.mktemp("written")
    log = AuditLog(directory / "log.jsonl", directory / "checkpoint.json")
    for number in range(ENTRIES):
        log.append(command_event(number, text="é ✓ \U0001f600", ratio=0.1 * number))
        if number % 7 == 6:
            log.write_checkpoint(signer)
        if number == 13:
            log.export_checkpoint(directory / "anchor.json")
    return directory


def _copy(written: Path, to: Path) -> AuditLog:
    for name in ("log.jsonl", "checkpoint.json", "checkpoint.history.jsonl", "anchor.json"):
        (to / name).write_bytes((written / name).read_bytes())
    return AuditLog(to / "log.jsonl", to / "checkpoint.json")


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    result = lines[:start]
    prev = hashlib.sha256(result[-1]).hexdigest() if result else "0" * 64
    for seq, line in enumerate(lines[start:], start=start):
        record = json.loads(line)
        record["seq"], record["prev"] = seq, prev
        result.append(rfc8785.dumps(record))
        prev = hashlib.sha256(result[-1]).hexdigest()
    return result


def _edit(line: bytes) -> bytes:
    record = json.loads(line)
    record["event"]["details"]["number"] = -1
    return rfc8785.dumps(record)


Tamper = Callable[[list[bytes]], list[bytes]]
TAMPERS: dict[str, Tamper] = {
    "intact": lambda lines: lines,
    "edited-byte": lambda lines: [*lines[:9], lines[9].replace(b"alice", b"alicf"), *lines[10:]],
    "edited-rechained": lambda lines: _rechain([*lines[:12], _edit(lines[12]), *lines[13:]], 12),
    "deleted": lambda lines: lines[:5] + lines[6:],
    "duplicated": lambda lines: [*lines[:20], lines[19], *lines[20:]],
    "reordered": lambda lines: [*lines[:16], lines[17], lines[16], *lines[18:]],
    "inserted-rechained": lambda lines: _rechain([*lines[:3], _edit(lines[3]), *lines[3:]], 3),
    "truncated": lambda lines: lines[:11],
    "not-json": lambda lines: [*lines[:8], b"{not json", *lines[9:]],
    "not-utf8": lambda lines: [*lines[:8], lines[8].replace(b"alice", b"al\xffce"), *lines[9:]],
    "not-an-entry": lambda lines: [*lines[:4], b'{"seq":4}', *lines[5:]],
    "seq-not-int": lambda lines: [
        *lines[:4],
        lines[4].replace(b'"seq":4,', b'"seq":4.0,'),
        *lines[5:],
    ],
    # json.loads reads these (a lone surrogate, surrounding spaces); pydantic-core refuses them.
    "lone-surrogate": lambda lines: [
        *lines[:6],
        lines[6].replace(b'"alice"', b'"\\ud800"'),
        *lines[7:],
    ],
    "spaces-around": lambda lines: [*lines[:6], b"  " + lines[6] + b" ", *lines[7:]],
    "empty-line": lambda lines: [*lines[:25], b"", *lines[25:]],
    "torn-tail": lambda lines: [*lines, lines[0][:40]],
}


def _verify(log: AuditLog, signer: SigningKey, anchored: bool) -> VerifyReport:
    against = load_checkpoint(log.path.with_name("anchor.json")) if anchored else None
    return log.verify([signer.public_key], against)


@pytest.mark.parametrize("anchored", [False, True], ids=["plain", "anchored"])
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_parallel_verification_reports_exactly_what_one_process_does(
    written: Path,
    signer: SigningKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tamper: str,
    anchored: bool,
) -> None:
    log = _copy(written, tmp_path)
    lines = log.path.read_bytes().split(b"\n")[:-1]
    data = b"".join(line + b"\n" for line in TAMPERS[tamper](lines))
    log.path.write_bytes(data[:-1] if tamper == "torn-tail" else data)
    alone = _verify(log, signer, anchored)

    ran: list[int] = []
    in_workers = verification._scan_in_workers

    def counted(reader, ranges, *rest):  # noqa: ANN001, ANN002, ANN202
        ran.append(len(ranges))
        return in_workers(reader, ranges, *rest)

    monkeypatch.setattr(verification, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(verification, "_workers", lambda: 3)
    monkeypatch.setattr(verification, "_scan_in_workers", counted)
    split = _verify(log, signer, anchored)

    assert ran == [3], "the log was not split into three ranges"
    assert split == alone
    assert alone.ok is (tamper == "intact")
    if tamper != "intact":
        assert alone.problems, tamper


def test_ranges_cover_the_log_in_whole_lines(
    written: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _copy(written, tmp_path)
    data = log.path.read_bytes()
    monkeypatch.setattr(verification, "PARALLEL_MIN_BYTES", 0)
    for workers in (2, 3, 8, 64):
        monkeypatch.setattr(verification, "_workers", lambda workers=workers: workers)
        with LocalRecordFile(log.path, None).reading() as reader:
            ranges = verification._ranges(reader, len(data))
        assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
        assert all(a < b == c for (a, b), (c, _) in zip(ranges, ranges[1:], strict=False))
        assert all(data[start - 1 : start] == b"\n" for start, _ in ranges[1:])
        assert 1 < len(ranges) <= min(workers, ENTRIES)


def test_legacy_log_verifies_in_parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = REPO / "tests" / "stores" / "legacy"
    for name in ("log.jsonl", "checkpoint.json", "checkpoint.history.jsonl"):
        (tmp_path / name).write_bytes((legacy / f"audit-{name}").read_bytes())
    signer = PublicKey.from_pem((legacy / "audit-signer.pem").read_bytes())
    monkeypatch.setattr(verification, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(verification, "_workers", lambda: 2)
    report = AuditLog(tmp_path / "log.jsonl", tmp_path / "checkpoint.json").verify([signer])
    assert report.ok and (report.entries, report.covered) == (5, 5), report.summary()


@pytest.mark.parametrize(
    "line",
    [
        b'{"event":{},"prev":"' + b"0" * 64 + b'","seq":0,"time":"t"}',
        b' {"event":{},"prev":"p","seq":1,"time":"t"} ',
        b'{"event":{"a":"\\ud800"},"prev":"p","seq":1,"time":"t"}',
        b'{"event":{},"prev":"p","seq":1,"seq":2,"time":"t"}',
        b'{"event":{},"prev":"p","seq":1,"time":"t"}x',
        b'{"event":{},"prev":"p","seq":01,"time":"t"}',
        b'{"event":{"a":NaN},"prev":"p","seq":1,"time":"t"}',
        b'\xef\xbb\xbf{"event":{},"prev":"p","seq":1,"time":"t"}',
        b'{"event":{"a":"\xff"},"prev":"p","seq":1,"time":"t"}',
        b'{"event":[],"prev":"p","seq":1,"time":"t"}',
        b"",
    ],
)
def test_entry_fields_are_read_as_json_loads_reads_them(line: bytes) -> None:
    """The reference: the line decoded and read by ``json.loads``, checked field by field."""
    try:
        record = json.loads(line.decode("utf-8"))
        expected = (record["seq"], record["prev"])
        assert set(record) == {"event", "prev", "seq", "time"}
        assert isinstance(record["event"], dict) and type(record["seq"]) is int
    except (ValueError, AssertionError, KeyError, TypeError):
        expected = None
    try:
        found = tuple(entry_link(line))
    except Malformed:
        found = None
    assert found == expected


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"text": 'é ✓ \U0001f600 \u2028 \x00 \\ " /', "ratio": 0.1, "tiny": 1e-7, "big": 1e21},
        {"nested": {"b": [1, 2.5, None, True], "a": {"\U0001f600": 1, "\uffff": 2}}},
        {"z": 2**53 - 1, "neg": -0.0, "int_float": 3.0},
    ],
)
@pytest.mark.parametrize("seq", [0, 7, 2**53 - 1])
def test_entry_line_is_the_rfc8785_form_of_the_entry(details: dict, seq: int) -> None:
    entry = AuditEntry(
        seq=seq,
        time=datetime(2026, 12, 7, 11, 0, 0, 123456, tzinfo=UTC),
        prev="cd" * 32,
        event=command_event(1, **details),
    )
    assert entry.line() == canonical_bytes(entry.model_dump(mode="json"))
    assert entry.line() == rfc8785.dumps(json.loads(entry.model_dump_json()))


def test_entry_line_refuses_a_sequence_number_json_cannot_hold_exactly() -> None:
    entry = AuditEntry(seq=2**53, time=datetime.now(UTC), prev="cd" * 32, event=command_event(1))
    with pytest.raises(NotCanonicalizable):
        entry.line()


def test_two_writers_in_one_process_keep_the_chain(tmp_path: Path, signer: SigningKey) -> None:
    """Each writer reuses the tail it left only while the file is exactly as it left it."""
    first = AuditLog(tmp_path / "log.jsonl", tmp_path / "checkpoint.json")
    second = AuditLog(tmp_path / "log.jsonl", tmp_path / "checkpoint.json")
    for number in range(6):
        (first if number % 3 else second).append(command_event(number))
    first.write_checkpoint(signer)
    report = second.verify([signer.public_key])
    assert report.ok and report.entries == 6, report.summary()


def test_a_writer_follows_its_file_when_it_is_replaced(tmp_path: Path, signer: SigningKey) -> None:
    """A descriptor kept open between appends must not write into a file moved away."""
    log = AuditLog(tmp_path / "log.jsonl", tmp_path / "checkpoint.json")
    other = AuditLog(tmp_path / "other.jsonl", tmp_path / "other-checkpoint.json")
    log.append(command_event(0))
    for number in range(3):
        other.append(command_event(number))
    moved = tmp_path / "moved.jsonl"
    os.replace(log.path, moved)
    os.replace(other.path, log.path)
    log.append(command_event(3))
    assert moved.read_bytes().count(b"\n") == 1
    lines = log.path.read_bytes().splitlines()
    assert len(lines) == 4
    assert json.loads(lines[3])["seq"] == 3
    assert json.loads(lines[3])["prev"] == hashlib.sha256(lines[2]).hexdigest()


json_keys = st.text(max_size=6) | st.sampled_from(["a", "b", "\ue000", "\U0001f600", "é"])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.floats()
    | st.sampled_from([1e-4, 9.99e-5, 1e16 - 2, 1e16, 0.1, -0.0, 3.0, 1e21, 5e-324, 0.3 - 0.2])
    | st.text(max_size=10)
    | st.sampled_from(["\ud800", "\x00\x1f\x7f\u2028", '"\\/'])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=16,
)


def _canonical_or_refusal(value: object) -> object:
    try:
        return canonical_bytes(value)
    except NotCanonicalizable as exc:
        return ("refused", str(exc))
    except UnicodeError as exc:
        return ("not unicode", type(exc))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_event_bytes_are_rfc8785_bytes_for_any_json_value(value: object) -> None:
    """The reference is the rfc8785 package: orjson is used only where it agrees."""
    try:
        fast: object = event_bytes(value)
    except NotCanonicalizable as exc:
        fast = ("refused", str(exc))
    except UnicodeError as exc:
        fast = ("not unicode", type(exc))
    assert fast == _canonical_or_refusal(value)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=80).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.integers(min_value=1, max_value=n - 1), max_size=5)
            if n > 1
            else st.just([]),
            st.sets(st.integers(min_value=1, max_value=n), max_size=6),
        )
    )
)
def test_subtrees_of_ranges_join_into_the_tree_of_all_leaves(case: tuple) -> None:
    """The reference is ``CompactRange`` fed leaf by leaf (RFC 9162 roots at every size)."""
    count, cuts, sizes = case
    leaves = [hashlib.sha256(str(number).encode()).digest() for number in range(count)]
    reference, expected = CompactRange(), {}
    for leaf in leaves:
        reference.append(leaf)
        if reference.size in sizes:
            expected[reference.size] = reference.root()
    bounds = sorted({0, *cuts, count})
    size, hashes, found = 0, [], {}
    for first, stop in zip(bounds, bounds[1:], strict=False):
        subtrees, at_sizes = verification._subtrees(leaves[first:stop], first, sizes)
        for at, below in at_sizes:
            found[at] = CompactRange(*verification._joined(size, hashes, below)).root()
        size, hashes = verification._joined(size, hashes, subtrees)
    assert found == expected
    assert CompactRange(size, hashes).root() == reference.root()
