"""The lock and record descriptors a writer keeps open between appends.

A writer keeps ``<file>.lock`` and the record file open and reuses the tail it
left while ``fstat`` shows the file exactly as it left it. These are the cases
where keeping them would be wrong: other threads, a forked child, other writers,
and a lock file replaced under a waiting writer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from stores.errors import UnsafeStoreFile
from stores.local import LocalRecordFile, StoreLocked
from tests.stores.records import chained, link, record


def _append(store: LocalRecordFile, body: str) -> None:
    with store.appending() as appender:
        appender.append([record(body)])


def test_threads_sharing_a_store_append_one_at_a_time(tmp_path: Path) -> None:
    store = LocalRecordFile(tmp_path / "records.jsonl", link)

    def write(name: str) -> None:
        for number in range(25):
            _append(store, f"{name}-{number}")

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(chained(store.path)) == 100


def test_writers_in_one_process_see_each_others_appends(tmp_path: Path) -> None:
    first = LocalRecordFile(tmp_path / "records.jsonl", link)
    second = LocalRecordFile(tmp_path / "records.jsonl", link)
    for number in range(9):
        _append(first if number % 3 else second, str(number))
    assert len(chained(first.path)) == 9


def test_a_forked_child_does_not_inherit_the_lock(tmp_path: Path) -> None:
    store = LocalRecordFile(tmp_path / "records.jsonl", link, lock_timeout=0.3)
    _append(store, "parent")
    with store.locked():
        pid = os.fork()
        if pid == 0:  # the child: the parent holds the lock, so this must time out
            try:
                with store.locked():
                    os._exit(1)
            except StoreLocked:
                os._exit(0)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    pid = os.fork()
    if pid == 0:  # now free: the child appends through descriptors of its own
        try:
            _append(store, "child")
            os._exit(0)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _append(store, "parent again")
    assert len(chained(store.path)) == 3


def test_a_lock_file_replaced_while_waiting_is_not_trusted(tmp_path: Path) -> None:
    """A writer waiting on a lock file that is then replaced must not take the old file's
    lock for the store's: it locks the file the path names now, and waits for its holder."""
    holder = LocalRecordFile(tmp_path / "records.jsonl", link)
    waiter = LocalRecordFile(tmp_path / "records.jsonl", link)
    _append(waiter, "first")  # the waiter keeps the (old) lock file open from here on
    appended = threading.Event()

    def wait_and_append() -> None:
        _append(waiter, "second")
        appended.set()

    with holder.locked():
        thread = threading.Thread(target=wait_and_append)
        thread.start()
        time.sleep(0.2)  # the waiter blocks on the old lock file
        os.unlink(holder.lock_path)
        fd = os.open(holder.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's lock on the new lock file
    try:
        assert not appended.wait(0.5), "the waiter appended under a lock file nobody uses"
    finally:
        os.close(fd)
    thread.join(10)
    assert appended.is_set()
    assert len(chained(holder.path)) == 2


def test_a_file_edited_in_place_to_the_same_size_is_read_again(tmp_path: Path) -> None:
    """The tail a writer left is reused only while the file is exactly as it left it."""
    store = LocalRecordFile(tmp_path / "records.jsonl", link)
    _append(store, "aaaa")
    _append(store, "bbbb")
    lines = store.path.read_bytes().splitlines()
    # Another writer's work (simulated): the last record rewritten, same length, chained.
    replaced = record("cccc")(1, hashlib.sha256(lines[0]).hexdigest())
    assert len(replaced) == len(lines[1])
    # Kernels before 6.13 stamp files with a clock tick (a few ms): an edit within the tick of
    # the append would not show. Only tampering edits in place, and verify names it.
    time.sleep(0.05)
    with store.path.open("r+b") as handle:
        handle.seek(len(lines[0]) + 1)
        handle.write(replaced)
    _append(store, "dddd")
    assert len(chained(store.path)) == 3


def test_a_directory_swapped_for_a_link_is_never_written_through(tmp_path: Path) -> None:
    """Appends through kept descriptors skip the per-call directory check; a directory
    replaced by a link to someone else's files must still be refused, the files untouched."""
    store = LocalRecordFile(tmp_path / "store" / "records.jsonl", link)
    store.append([record("first")])
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "records.jsonl").write_bytes(b"victim\n")
    (tmp_path / "store").rename(tmp_path / "moved")
    (tmp_path / "store").symlink_to(victims)
    with pytest.raises(UnsafeStoreFile, match="symbolic link"):
        store.append([record("second")])
    assert (victims / "records.jsonl").read_bytes() == b"victim\n"
    assert sorted(os.listdir(victims)) == ["records.jsonl"]  # not even a lock file made there
    assert len(chained(tmp_path / "moved" / "records.jsonl")) == 1
