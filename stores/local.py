"""The local-file backend: a durable, append-only, hash-chained JSON-lines file.

Format
    One record per line, ``\\n``-terminated. A chained file's records carry
    ``seq`` (0, 1, ...) and ``prev``, the SHA-256 of the previous line's bytes
    (:data:`GENESIS` for the first); the owner says how to read those two fields
    from a line (a :data:`LinkReader`) and encodes its records itself. A file
    without a chain (``link=None``) holds lines that only need to be complete.

Durability and concurrency
    Writers hold ``<file>.lock`` (``flock``), read only the tail, write all of an
    append's lines with one ``O_APPEND`` write and ``fsync`` before returning
    (and the directory when the file is new). So a record
    :meth:`LocalRecordFile.append` (or :meth:`Appender.append`) returned
    survives a crash, and writers in several processes neither interleave nor
    lose records. Threads of one process appending at once share a write and an
    ``fsync`` (group commit, :meth:`LocalRecordFile.append`); writers in
    different processes each pay their own.

Cost per append
    An append is one ``fsync`` plus a handful of cheap system calls: the lock
    file and the record file stay open between appends (each use checks, under
    the lock, that the path still names the same regular file), and the tail a
    writer left is reused while the file's status shows it exactly as that
    writer left it (inode, size, modification and change times); any other
    writer's append changes those, and the tail is read again. That usual case
    runs inline in :meth:`LocalRecordFile.append_held`, so the Python around the
    ``fsync`` stays small.

The torn-tail rule (the one rule for every record file)
    A crash can tear only the last line: it lacks its newline, or (in a chained
    file) is not a record. Readers report it (:class:`Torn`) and ignore it; it was
    never acknowledged, so nothing it would have recorded happened. The next
    writer copies its bytes to the first free ``<file>.torn-N`` (new, mode 0600,
    synced), truncates them, and in a chained file appends a recovery record
    naming their offset, length and SHA-256 (built by the owner) before its own.
    Two damaged lines at the end cannot come from a crash: :class:`DamagedTail`,
    nothing repaired. An owner may also refuse to repair torn bytes inside a
    range it protects (the audit log: bytes a signed checkpoint covers).

Every file here is opened as :mod:`stores.files` says: never through a link,
only a regular file the user owns.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from stores.errors import DamagedTail, StoreError, UnsafeStoreFile
from stores.files import (
    check_store_directory,
    create_private_file,
    fsync_directory,
    open_store_file,
    write_all,
)

GENESIS = "0" * 64
_READ_CHUNK = 1 << 20
_TAIL_FIRST = 1 << 12  # the last two lines usually fit: a record is well under 2 KiB
_TAIL_CHUNK = 1 << 16
_LOCK_POLL_S = 0.05


class StoreLocked(StoreError):
    """Another process held a store's lock for longer than the timeout."""


class Link(NamedTuple):
    """What the hash chain needs from a record: its sequence number and previous hash."""

    seq: int
    prev: str


# Reads the chain fields of a line; None if the line is not a record.
LinkReader = Callable[[bytes], Link | None]
# Encodes the record that gets sequence number ``seq`` after the line hashing to ``prev``.
RecordBuilder = Callable[[int, str], bytes]


@dataclass(frozen=True)
class Line:
    """One line of the file: where it starts, its bytes without the newline, and whether it ends."""

    offset: int
    data: bytes
    terminated: bool


@dataclass(frozen=True)
class Torn:
    """A damaged last line: where it starts, how long it is, and why it is not a record."""

    offset: int
    length: int
    reason: str


@dataclass(frozen=True)
class Tail:
    """What a writer needs from the end of the file, found without reading the rest."""

    end: int  # just past the last intact line
    next_seq: int
    next_prev: str
    torn: Torn | None = None
    damaged_before_torn: bool = False


@dataclass(frozen=True)
class SetAside:
    """Torn bytes a writer moved out of the file: what the recovery record must name."""

    offset: int
    length: int
    sha256: str
    reason: str
    seq: int  # the sequence number the torn line would have had
    moved_to: Path


# Builds the recovery record for bytes just set aside.
RecoveryBuilder = Callable[[SetAside], RecordBuilder]

EMPTY_TAIL = Tail(end=0, next_seq=0, next_prev=GENESIS)


def sha256_hex(data: bytes) -> str:
    """The chain hash of a line."""
    return hashlib.sha256(data).hexdigest()


def _chain_lines(
    records: Sequence[RecordBuilder], seq: int, prev: str
) -> tuple[list[bytes], int, str]:
    """Build ``records`` in order after the line numbered ``seq - 1`` whose hash is
    ``prev``: their lines, and the sequence number and hash the next line continues from."""
    lines = []
    for build in records:
        line = build(seq, prev)
        lines.append(line)
        seq, prev = seq + 1, hashlib.sha256(line).hexdigest()
    return lines, seq, prev


class LocalRecordFile:
    """The record file at ``path``, locked by ``<path>.lock``; construction touches nothing."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        link: LinkReader | None,
        *,
        lock_timeout: float = -1,
        file_mode: int = 0o644,
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        # Checked on every append: the strings spare a conversion per system call.
        self._where = os.fspath(self.path)
        self._directory = self.path.parent
        self._link = link
        self._timeout = lock_timeout
        self._mode = file_mode
        self._lock = _FileLock(self.lock_path)
        # The descriptor appends go through, and the tail the last append left (under the lock).
        self._file = _KeptOpen()
        self._left: tuple[_Stamp, Tail] | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock (reentrant within a thread; exclusive between threads)."""
        check_store_directory(self._directory)
        if not self._lock.acquire(self._timeout):
            raise self._stayed_locked()
        try:
            yield
        finally:
            self._lock.release()

    def append(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: Callable[[Torn], None] | None = None,
    ) -> list[bytes]:
        """Lock, append ``records`` durably, unlock: :meth:`appending` and
        :meth:`Appender.append` in one call, with the same checks and result.

        Threads of this process appending here at once share writes (group
        commit): while one thread writes, the others queue; the next writer takes
        every queued append and writes them all with one write and one ``fsync``.
        Each caller returns only after the ``fsync`` that covers its lines, or
        raises and has nothing acknowledged. A thread already holding
        :meth:`locked` appends at once (:meth:`append_held`).

        Unlike :meth:`locked`, this does not check the directory on every call: an
        append that opens nothing writes through descriptors opened earlier, and
        under the lock a ``stat`` of each path (the lock file's, the record file's)
        shows that it still names that very file (device and inode), so whatever
        the directory is now, the bytes go to the file the path names. Each open
        (the lock file, the record file, torn bytes set aside) checks the directory
        first, so a directory swapped for a link is refused as soon as anything
        would be opened through it.
        """
        lock = self._lock
        if lock.held_here():
            return self.append_held(records, recovery=recovery, guard=guard)
        queue = lock.queue()
        with queue.mutex:
            if queue.writing:
                waiting = _Waiting(records, recovery, guard)
                queue.waiting.append(waiting)
            else:
                queue.writing, waiting = True, None
        if waiting is not None:
            try:
                waiting.done.wait()
            except BaseException:  # e.g. KeyboardInterrupt: no outcome, but the queue goes on
                queue.abandon(waiting)
                raise
            if not waiting.writes_next:
                return waiting.outcome()
        try:
            if not lock.acquire(self._timeout):
                raise self._stayed_locked()
            try:
                # Unlocked, an empty queue may gain an append right after this look: that
                # one waits for hand_over, which makes it the next writer.
                if not queue.waiting:
                    return self.append_held(records, recovery=recovery, guard=guard)
                with queue.mutex:
                    joined, queue.waiting = queue.waiting, []
                return self._append_group(_Waiting(records, recovery, guard), joined)
            finally:
                lock.release()
        finally:
            queue.hand_over()

    def append_held(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: Callable[[Torn], None] | None = None,
    ) -> list[bytes]:
        """:meth:`append` for a caller that already holds :meth:`locked`.

        An append is one ``fsync`` and a little Python, so the Python counts: the
        usual case runs here inline. The kept descriptor is the file the path
        names (checked, as :meth:`writing` does) and that file's status shows it
        exactly as this writer left it, so the tail it left holds (intact: only an
        intact tail is left) and the file is not new. Anything else (the first
        append, a forked child, another writer's append, an edit, a torn line, a
        new file) goes through :class:`Appender`, which reads the tail and applies
        the torn-tail rule.
        """
        fd, opened = self._file.opened(self._where, self._open_appending)
        tail = self._tail_left(opened)
        if tail is None or not opened.st_size or not records:
            return Appender(self, fd, opened).append(records, recovery=recovery, guard=guard)
        lines, seq, prev = _chain_lines(records, tail.next_seq, tail.next_prev)
        data = b"\n".join(lines) + b"\n"
        written = os.write(fd, data)
        if written < len(data):  # a short write (a signal, a full disk): the rest after it
            write_all(fd, data[written:])
        os.fsync(fd)
        self._leave(fd, Tail(tail.end + len(data), seq, prev))
        return lines

    def _append_group(self, own: _Waiting, joined: list[_Waiting]) -> list[bytes]:
        """Append ``own`` and what ``joined`` it with one write and one ``fsync`` (the lock
        is held); each joined caller is woken with its lines or its error."""
        try:
            self._write_group([own, *joined])
        except BaseException as exc:
            for each in joined:
                if each.lines is None and each.error is None:
                    each.error = exc  # not acknowledged: its lines may or may not be on disk
            raise
        finally:
            for each in joined:
                each.done.set()
        return own.outcome()

    def _write_group(self, group: list[_Waiting]) -> None:
        """Give each of ``group`` its lines (once durable) or the error its own records raised.

        Until this writer knows the tail (the first append, another writer's, a torn
        line, a new file), appends go one at a time through :meth:`append_held`,
        which reads it; then the rest share one write and one ``fsync``.
        """
        fd, opened = self._file.opened(self._where, self._open_appending)
        tail = self._tail_left(opened)
        while tail is None or not opened.st_size:
            first, group = group[0], group[1:]
            try:
                first.lines = self.append_held(
                    first.records, recovery=first.recovery, guard=first.guard
                )
            except Exception as exc:  # noqa: BLE001 - its caller raises it
                first.error = exc
            if not group:
                return
            fd, opened = self._file.opened(self._where, self._open_appending)
            tail = self._tail_left(opened)
        seq, prev = tail.next_seq, tail.next_prev
        built: list[tuple[_Waiting, list[bytes]]] = []
        for each in group:
            try:
                lines, seq, prev = _chain_lines(each.records, seq, prev)
            except Exception as exc:  # noqa: BLE001 - its caller raises it
                each.error = exc  # its records are left out; the others' chain is unchanged
                continue
            built.append((each, lines))
        data = b"".join(line + b"\n" for _, lines in built for line in lines)
        write_all(fd, data)
        os.fsync(fd)
        self._leave(fd, Tail(tail.end + len(data), seq, prev))
        for each, lines in built:
            each.lines = lines

    def _stayed_locked(self) -> StoreLocked:
        return StoreLocked(
            f"{self.path} stayed locked for {self._timeout:g} s by another process "
            f"({self.lock_path})"
        )

    @contextlib.contextmanager
    def appending(self) -> Iterator[Appender]:
        """Lock, then open for appending (creating the file and its directory if needed:
        the lock file is created first, and its directory with it)."""
        with self.locked(), self.writing() as appender:
            yield appender

    @contextlib.contextmanager
    def writing(self) -> Iterator[Appender]:
        """Open for appending; the caller already holds :meth:`locked`."""
        yield Appender(self, self._file.get(self._where, self._open_appending))

    @contextlib.contextmanager
    def reading(self) -> Iterator[Reader | None]:
        """A reader of the file as it is now, or None when there is no file (an empty store)."""
        try:
            fd = open_store_file(self.path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            yield Reader(self, fd)
        finally:
            os.close(fd)

    def _open_appending(self) -> int:
        return open_store_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, self._mode)

    def _tail_left(self, info: os.stat_result) -> Tail | None:
        """The tail the last append here left, if the file is still exactly as it left it."""
        if self._left is not None and self._left[0] == _stamp(info):
            return self._left[1]
        return None

    def _leave(self, fd: int, tail: Tail) -> None:
        self._left = (_stamp(os.fstat(fd)), tail)


# What tells a file changed since a writer left it: another append changes the size and
# both times, an edit in place the times (ctime cannot be set back by anyone).
_Stamp = tuple[int, int, int, int, int]


def _stamp(info: os.stat_result) -> _Stamp:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _KeptOpen:
    """A descriptor kept open between uses, reopened when the path names another file
    (replaced, removed, a link planted) or in a forked child; closed with its owner."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = 0
        self._file: tuple[int, int] | None = None  # (device, inode) of what is open
        self._close: weakref.finalize | None = None

    def get(self, path: str | Path, open_fd: Callable[[], int]) -> int:
        """The kept descriptor if ``path`` still names its file, else a new one."""
        return self.opened(path, open_fd)[0]

    def opened(self, path: str | Path, open_fd: Callable[[], int]) -> tuple[int, os.stat_result]:
        """:meth:`get`, with the status of the file open now.

        One ``stat`` of ``path`` both checks that it names the kept descriptor's file
        and reads that file's status: same device and inode, same file.
        """
        if self._fd is not None and self._pid == os.getpid():
            try:
                info = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if (info.st_dev, info.st_ino) == self._file:
                    return self._fd, info
        return self._reopen(open_fd)

    def kept(self, open_fd: Callable[[], int]) -> int:
        """The kept descriptor whatever ``path`` names now (the caller checks :meth:`names`
        when it matters), or a new one in a new process."""
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        return self._reopen(open_fd)[0]

    def names(self, path: str | Path) -> bool:
        """Whether ``path`` (not followed) names the file open here."""
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == self._file

    def _reopen(self, open_fd: Callable[[], int]) -> tuple[int, os.stat_result]:
        self.drop()
        fd = open_fd()
        info = os.fstat(fd)
        self._fd, self._pid, self._file = fd, os.getpid(), (info.st_dev, info.st_ino)
        self._close = weakref.finalize(self, os.close, fd)
        return fd, info

    def drop(self) -> None:
        if self._close is not None:
            # In a forked child this closes only the child's copy: the parent keeps its own.
            self._close()
        self._fd = self._close = self._file = None


class _Waiting:
    """An append waiting in this process's queue for the thread writing now."""

    def __init__(
        self,
        records: Sequence[RecordBuilder],
        recovery: RecoveryBuilder | None,
        guard: Callable[[Torn], None] | None,
    ) -> None:
        self.records, self.recovery, self.guard = records, recovery, guard
        self.done = threading.Event()
        self.writes_next = False  # woken to write the queue itself, not with an outcome
        self.lines: list[bytes] | None = None
        self.error: BaseException | None = None

    def outcome(self) -> list[bytes]:
        if self.error is not None:
            raise self.error
        assert self.lines is not None
        return self.lines


class _Queue:
    """The appends of this process's threads waiting while one of them writes."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.writing = False
        self.waiting: list[_Waiting] = []

    def hand_over(self) -> None:
        """The writer is done: the first waiting append writes next (taking the queue then)."""
        with self.mutex:
            if not self.waiting:
                self.writing = False
                return
            first = self.waiting.pop(0)
            first.writes_next = True
        first.done.set()

    def abandon(self, waiting: _Waiting) -> None:
        """``waiting``'s caller stopped waiting: drop it if still queued, or pass on the
        writing it was handed (an append some writer took is finished, unacknowledged)."""
        with self.mutex:
            if waiting in self.waiting:
                self.waiting.remove(waiting)
                return
            if not waiting.writes_next:
                return
        self.hand_over()


class _FileLock:
    """``flock`` on a lock file, held through one descriptor kept open between acquisitions.

    Reentrant within a thread and exclusive between threads (a mutex: threads share the
    descriptor, and with it the ``flock``) and between processes (the ``flock``). A lock
    file removed or replaced while a writer waited guards nothing, so the writer checks
    after locking that the path still names its file, and starts over if not. A forked
    child starts unlocked with a descriptor of its own: what it inherited is the parent's.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._where = os.fspath(path)  # checked on every acquisition
        self._file = _KeptOpen()
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._mutex = threading.RLock()
        self._depth = 0
        self._held: int | None = None
        self._owner: int | None = None  # the thread holding the lock
        self._queue = _Queue()

    def held_here(self) -> bool:
        """Whether this thread holds the lock (in this process)."""
        return self._owner == threading.get_ident() and self._pid == os.getpid()

    def queue(self) -> _Queue:
        """This process's queue of appends waiting for the thread writing now."""
        if self._pid != os.getpid():
            self._start()  # a forked child: the parent's queue and threads are not its own
        return self._queue

    def acquire(self, timeout: float) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds (forever if negative)."""
        if self._pid != os.getpid():
            self._start()  # never unlock the inherited descriptor: that frees the parent's lock
        if timeout < 0:
            deadline = None
            self._mutex.acquire()
        else:
            deadline = time.monotonic() + timeout
            if not self._mutex.acquire(timeout=timeout):
                return False
        if self._depth:
            self._depth += 1
            return True
        try:
            held = self._lock_file(deadline)
        except BaseException:
            self._mutex.release()
            raise
        if held is None:
            self._mutex.release()
            return False
        self._held, self._depth, self._owner = held, 1, threading.get_ident()
        return True

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._held is not None:
                self._owner = None
                fcntl.flock(self._held, fcntl.LOCK_UN)
                self._held = None
        finally:
            self._mutex.release()

    def _lock_file(self, deadline: float | None) -> int | None:
        """The descriptor now holding the ``flock``, or None if the deadline passed first."""
        while True:
            # Checked once locked: a file replaced while this writer waited guards nothing.
            fd = self._file.kept(self._open)
            if deadline is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                while not _try_flock(fd):
                    if time.monotonic() >= deadline:
                        return None
                    time.sleep(_LOCK_POLL_S)
            if self._file.names(self._where):
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._file.drop()

    def _open(self) -> int:
        check_store_directory(self._path.parent)
        # As filelock did: a reader's lock may come before any writer made the directory.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | _LOCK_FLAGS, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EWOULDBLOCK):
                raise
            raise UnsafeStoreFile(
                f"{self._path}: is not a regular lock file ({exc.strerror}); refusing it"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeStoreFile(f"{self._path}: is not a regular lock file; refusing it")
        return fd


# A link planted as the lock file is refused (O_NOFOLLOW), a FIFO does not block the open.
_LOCK_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Reader:
    """Reads an open record file by byte offset; bytes before ``tail.end`` never change."""

    def __init__(self, store: LocalRecordFile, fd: int) -> None:
        self.store = store
        self.fd = fd
        self._tail: Tail | None = None

    @property
    def size(self) -> int:
        """Bytes in the file now."""
        return os.fstat(self.fd).st_size

    @property
    def tail(self) -> Tail:
        """The end of the file: the next record's chain fields, and a torn last line if any."""
        if self._tail is None:
            self._tail = self._find_tail()
        return self._tail

    def _find_tail(self) -> Tail:
        return _scan_tail(self.fd, self.size, self.store._link)

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``."""
        return os.pread(self.fd, end - start, start) if end > start else b""

    def lines(self, start: int, end: int) -> Iterator[Line]:
        """Lines of the bytes ``[start, end)``, in order, read in large chunks."""
        for offset, block in self.blocks(start, end):
            yield from _split_block(offset, block)

    def search(self, needle: bytes, start: int, end: int) -> Iterator[tuple[int, Line]]:
        """``(index, line)`` of each line in ``[start, end)`` that holds ``needle``.

        ``index`` counts lines from ``start``. A block without the needle is only
        counted, never split, so a search costs little more than reading the file.
        """
        index = 0
        for offset, block in self.blocks(start, end):
            if needle not in block:
                index += block.count(b"\n") + (not block.endswith(b"\n"))
                continue
            for line in _split_block(offset, block):
                if needle in line.data:
                    yield index, line
                index += 1

    def blocks(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, bytes)`` of whole lines in ``[start, end)``, about a megabyte at a time;
        only the last block may end without a newline."""
        return read_blocks(self.fd, start, end)

    def line_start_after(self, position: int, end: int) -> int:
        """Where the first line starting at or after ``position`` starts (``end`` if none does
        before ``end``): a place to split ``[0, end)`` into ranges of whole lines."""
        if position <= 0:
            return 0
        while position < end:
            window = os.pread(self.fd, min(_TAIL_CHUNK, end - position + 1), position - 1)
            if not window:
                break
            found = window.find(b"\n")
            if found >= 0:
                return min(position + found, end)
            position += len(window)
        return end

    def line_ending_at(self, end: int) -> Line | None:
        """The line whose newline is the byte just before ``end``, if there is one."""
        lines = _final_lines(self.fd, end, 1)
        if not lines or not lines[0].terminated:
            return None
        return lines[0]

    def damaged_tail_message(self) -> str:
        """Why :class:`DamagedTail` is raised: two damaged lines at the end."""
        return (
            f"{self.store.path}: the last two lines (before byte offset {self.tail.end} and "
            f"after) are damaged; a crash tears at most one line, so this is tampering or "
            f"corruption"
        )


class Appender(Reader):
    """An open record file that the lock holder appends to."""

    def __init__(
        self, store: LocalRecordFile, fd: int, opened: os.stat_result | None = None
    ) -> None:
        super().__init__(store, fd)
        # ``opened``: the caller's fstat of ``fd`` just now, under the lock.
        self._opened = os.fstat(fd) if opened is None else opened

    def _find_tail(self) -> Tail:
        left = self.store._tail_left(self._opened)
        if left is not None:
            return left
        return _scan_tail(self.fd, self._opened.st_size, self.store._link)

    def append(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: Callable[[Torn], None] | None = None,
    ) -> list[bytes]:
        """Append ``records`` durably with one write; return their lines (without newlines).

        A torn last line is first set aside and truncated (the module's rule);
        ``guard`` may refuse that by raising, and ``recovery`` builds the record
        that names it (a file without a chain records nothing).
        """
        tail = self.tail
        if tail.damaged_before_torn:
            raise DamagedTail(self.damaged_tail_message())
        builders = list(records)
        created = self._opened.st_size == 0
        if tail.torn is not None:
            if guard is not None:
                guard(tail.torn)
            aside = self._set_aside(tail.torn, tail.next_seq)
            if recovery is not None:
                builders.insert(0, recovery(aside))
        lines, seq, prev = _chain_lines(builders, tail.next_seq, tail.next_prev)
        data = b"".join(line + b"\n" for line in lines)
        write_all(self.fd, data)
        os.fsync(self.fd)
        if created:
            fsync_directory(self.store.path.parent)
        self._tail = Tail(end=tail.end + len(data), next_seq=seq, next_prev=prev)
        self.store._leave(self.fd, self._tail)
        return lines

    def _set_aside(self, torn: Torn, seq: int) -> SetAside:
        """Keep the torn bytes in the first free ``<file>.torn-N`` (0600), then truncate them."""
        data = self.read(torn.offset, torn.offset + torn.length)
        path = self.store.path
        number = 0
        while True:
            number += 1
            moved_to = path.with_name(f"{path.name}.torn-{number}")
            try:
                create_private_file(moved_to, data)
                break
            except FileExistsError:
                continue
        os.ftruncate(self.fd, torn.offset)
        os.fsync(self.fd)
        return SetAside(
            offset=torn.offset,
            length=torn.length,
            sha256=sha256_hex(data),
            reason=torn.reason,
            seq=seq,
            moved_to=moved_to,
        )


def read_blocks(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """:meth:`Reader.blocks` of the open file ``fd`` (usable where a :class:`Reader` is not,
    e.g. in a forked worker that inherited the descriptor)."""
    offset = position = start
    pending = b""
    while position < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - position), position)
        if not chunk:
            break
        position += len(chunk)
        data = pending + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield offset, data[:cut]
            offset += cut
        pending = data[cut:]
    if pending:
        yield offset, pending


def _scan_tail(fd: int, size: int, link: LinkReader | None) -> Tail:
    lines = _final_lines(fd, size, 2)
    if not lines:
        return EMPTY_TAIL
    final = lines[-1]
    if final.terminated and link is None:
        return Tail(end=size, next_seq=0, next_prev=GENESIS)
    found = link(final.data) if final.terminated and link is not None else None
    if found is not None:
        return Tail(end=size, next_seq=found.seq + 1, next_prev=sha256_hex(final.data))
    reason = "not a valid entry" if final.terminated else "no trailing newline"
    torn = Torn(offset=final.offset, length=size - final.offset, reason=reason)
    if len(lines) == 1 or link is None:
        return Tail(end=final.offset, next_seq=0, next_prev=GENESIS, torn=torn)
    before = link(lines[0].data)
    if before is None:
        return Tail(final.offset, 0, GENESIS, torn=torn, damaged_before_torn=True)
    return Tail(final.offset, before.seq + 1, sha256_hex(lines[0].data), torn=torn)


def _split_block(offset: int, block: bytes) -> Iterator[Line]:
    *complete, rest = block.split(b"\n")
    for data in complete:
        yield Line(offset, data, terminated=True)
        offset += len(data) + 1
    if rest:
        yield Line(offset, rest, terminated=False)


def _final_lines(fd: int, end: int, count: int) -> list[Line]:
    """Up to ``count`` last lines of the bytes before ``end``, reading backwards."""
    start, window, step = end, b"", _TAIL_FIRST
    while True:
        lines = _last_lines(window, start, count, whole=start == 0)
        if lines is not None:
            return lines
        step = min(step, start)
        start -= step
        window = os.pread(fd, step, start) + window
        step = _TAIL_CHUNK


def _last_lines(window: bytes, base: int, count: int, *, whole: bool) -> list[Line] | None:
    """The last ``count`` lines of ``window`` (which starts at byte ``base``), or None when
    fewer are certainly whole and the window does not start the file: read further back."""
    if not window:
        return [] if whole else None
    terminated = window.endswith(b"\n")
    stop = len(window) - terminated
    lines: list[Line] = []
    while len(lines) < count:
        cut = window.rfind(b"\n", 0, stop)
        if cut < 0:
            # The window's first line may be the tail of a longer one unless the file starts here.
            if not whole:
                return None
            lines.append(Line(base, window[:stop], terminated))
            break
        lines.append(Line(base + cut + 1, window[cut + 1 : stop], terminated))
        stop, terminated = cut, True
    lines.reverse()
    return lines
