"""Group commit: threads of one process appending at once share one write and one fsync.

What must hold whatever the grouping: every append a thread saw return is in
the file, in the chain, where its sequence number says; an append that raised
left nothing; no thread waits forever. Counting ``os.fsync`` calls shows the
sharing itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from audits.keys import SigningKey
from audits.log import AuditEntry, AuditEvent, AuditLog, EventKind
from stores.local import LocalRecordFile, _Queue, _Waiting
from tests.stores.records import chained, link, record


def _failing(seq: int, prev: str) -> bytes:
    raise ValueError("this record cannot be encoded")


class _FsyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.fsync

        def counted(fd: int) -> None:
            self.calls += 1
            real(fd)

        monkeypatch.setattr(os, "fsync", counted)


def test_appends_queued_behind_a_writer_share_one_fsync_and_a_failing_one_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalRecordFile(tmp_path / "records.jsonl", link)
    store.append([record("first")])  # the tail is known: the group takes the shared path
    outcomes: dict[str, object] = {}

    def append(name: str) -> None:
        records = [_failing] if name == "bad" else [record(name), record(name + "+")]
        try:
            outcomes[name] = store.append(records)
        except ValueError as exc:
            outcomes[name] = exc

    names = ["t0", "t1", "bad", "t3", "t4", "t5"]
    threads = [threading.Thread(target=append, args=(name,)) for name in names]
    with store.locked():
        for thread in threads:
            thread.start()
        # One thread waits for the lock, the other five queue behind it.
        deadline = time.monotonic() + 10
        while len(store._lock.queue().waiting) < len(names) - 1:
            assert time.monotonic() < deadline, "the threads never queued"
            time.sleep(0.01)
        # The lock's holder appends at once, ahead of the queue (no deadlock on itself).
        store.append([record("holder")])
        fsyncs = _FsyncCounter(monkeypatch)
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()

    # The waiting writer wrote its own append, and the four good queued ones, at once.
    assert fsyncs.calls == 1
    assert isinstance(outcomes["bad"], ValueError)
    records = chained(store.path)
    bodies = [record["body"] for record in records]
    assert bodies[:2] == ["first", "holder"]
    assert sorted(bodies[2:]) == sorted(n + s for n in names if n != "bad" for s in ("", "+"))
    for name in names:
        if name != "bad":
            lines = outcomes[name]
            assert isinstance(lines, list) and len(lines) == 2
            # What the caller was told was written is the file's line at that sequence number.
            seq = json.loads(lines[0])["seq"]
            assert store.path.read_bytes().splitlines()[seq : seq + 2] == lines


def test_eight_threads_appending_to_one_log_lose_nothing_and_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit" / "audit.log", tmp_path / "audit" / "checkpoint.json")
    key = SigningKey.generate()
    log.open_tree(key)
    threads, per_thread = 8, 200
    acknowledged: dict[int, list[AuditEntry]] = {n: [] for n in range(threads)}

    def append(number: int) -> None:
        for index in range(per_thread):
            event = AuditEvent(
                actor=f"thread-{number}",
                command="custodian test",
                kind=EventKind.DECISION,
                details={"index": index},
            )
            acknowledged[number].append(log.append(event))

    fsyncs = _FsyncCounter(monkeypatch)
    workers = [threading.Thread(target=append, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert not worker.is_alive()

    total = threads * per_thread
    assert 0 < fsyncs.calls < total  # appends shared fsyncs
    lines = log.path.read_bytes().splitlines()
    assert len(lines) == total
    for number, entries in acknowledged.items():
        assert len(entries) == per_thread
        assert {entry.event.actor for entry in entries} == {f"thread-{number}"}
        # Each acknowledged entry is the log's line at its sequence number, in call order.
        assert [entry.event.details["index"] for entry in entries] == list(range(per_thread))
        assert [entry.seq for entry in entries] == sorted(entry.seq for entry in entries)
        for entry in entries:
            assert lines[entry.seq] == entry.line()
    log.write_checkpoint(key)
    report = log.verify([key.public_key])
    assert report.ok, report.summary()
    assert report.entries == report.covered == total


def test_a_waiter_that_stops_waiting_never_stalls_the_queue() -> None:
    """A caller interrupted while queued (e.g. KeyboardInterrupt) leaves the queue working:
    still queued, it is dropped; handed the writing, it passes it on."""
    queue = _Queue()
    queue.writing = True
    dropped, promoted, last = (_Waiting([record(n)], None, None) for n in ("a", "b", "c"))
    queue.waiting.extend([dropped, promoted, last])
    queue.abandon(dropped)
    assert queue.waiting == [promoted, last]
    queue.hand_over()  # the writer is done: ``promoted`` writes next ...
    assert promoted.writes_next and promoted.done.is_set()
    queue.abandon(promoted)  # ... but its caller is gone: ``last`` writes instead
    assert last.writes_next and last.done.is_set() and queue.writing
    queue.hand_over()
    assert not queue.writing and not queue.waiting
