"""The local-file backend: a durable, append-only, hash-chained JSON-lines file.

Format
    One record per line, ``\\n``-terminated. A chained file's records carry
    ``seq`` (0, 1, ...) and ``prev``, the SHA-256 of the previous line's bytes
    (:data:`GENESIS` for the first); the owner says how to read those two fields
    from a line (a :data:`LinkReader`) and encodes its records itself. A file
    without a chain (``link=None``) holds lines that only need to be complete.

Durability and concurrency
    Writers hold ``<file>.lock`` (``flock``, through ``filelock``), read only the
    tail, write all of an append's lines with one ``O_APPEND`` write and
    ``fsync`` before returning (and the directory when the file is new). So a
    record :meth:`Appender.append` returned survives a crash, and writers in
    several processes neither interleave nor lose records.

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
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import filelock

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
_TAIL_CHUNK = 1 << 16


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
        self._link = link
        self._timeout = lock_timeout
        self._mode = file_mode
        self._lock = filelock.FileLock(self.lock_path, timeout=lock_timeout)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's lock (reentrant within one process)."""
        check_store_directory(self.path.parent)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise StoreLocked(
                f"{self.path} stayed locked for {self._timeout:g} s by another process "
                f"({self.lock_path})"
            ) from None
        except OSError as exc:
            # filelock opens the lock file with O_NOFOLLOW: a link planted there fails here.
            if not self.lock_path.is_symlink() and self.lock_path.is_file():
                raise
            raise UnsafeStoreFile(
                f"{self.lock_path}: is not a regular lock file ({exc.strerror}); refusing it"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def appending(self) -> Iterator[Appender]:
        """Lock, then open for appending (creating the file and its directory if needed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked(), self.writing() as appender:
            yield appender

    @contextlib.contextmanager
    def writing(self) -> Iterator[Appender]:
        """Open for appending; the caller already holds :meth:`locked`."""
        fd = open_store_file(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, self._mode)
        try:
            yield Appender(self, fd)
        finally:
            os.close(fd)

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
            self._tail = _scan_tail(self.fd, self.size, self.store._link)
        return self._tail

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``."""
        return os.pread(self.fd, end - start, start) if end > start else b""

    def lines(self, start: int, end: int) -> Iterator[Line]:
        """Lines of the bytes ``[start, end)``, in order, read in large chunks."""
        for offset, block in self._blocks(start, end):
            yield from _split_block(offset, block)

    def search(self, needle: bytes, start: int, end: int) -> Iterator[tuple[int, Line]]:
        """``(index, line)`` of each line in ``[start, end)`` that holds ``needle``.

        ``index`` counts lines from ``start``. A block without the needle is only
        counted, never split, so a search costs little more than reading the file.
        """
        index = 0
        for offset, block in self._blocks(start, end):
            if needle not in block:
                index += block.count(b"\n") + (not block.endswith(b"\n"))
                continue
            for line in _split_block(offset, block):
                if needle in line.data:
                    yield index, line
                index += 1

    def _blocks(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, bytes)`` of whole lines in ``[start, end)``, about a megabyte at a time;
        only the last block may end without a newline."""
        offset = position = start
        pending = b""
        while position < end:
            chunk = os.pread(self.fd, min(_READ_CHUNK, end - position), position)
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
        created = self.size == 0
        if tail.torn is not None:
            if guard is not None:
                guard(tail.torn)
            aside = self._set_aside(tail.torn, tail.next_seq)
            if recovery is not None:
                builders.insert(0, recovery(aside))
        seq, prev = tail.next_seq, tail.next_prev
        lines = []
        for build in builders:
            line = build(seq, prev)
            lines.append(line)
            seq, prev = seq + 1, sha256_hex(line)
        data = b"".join(line + b"\n" for line in lines)
        write_all(self.fd, data)
        os.fsync(self.fd)
        if created:
            fsync_directory(self.store.path.parent)
        self._tail = Tail(end=tail.end + len(data), next_seq=seq, next_prev=prev)
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
    start, window = end, b""
    while True:
        lines = _split_lines(window, start, whole=start == 0)
        if len(lines) >= count or start == 0:
            return lines[-count:]
        step = min(_TAIL_CHUNK, start)
        start -= step
        window = os.pread(fd, step, start) + window


def _split_lines(window: bytes, base: int, *, whole: bool) -> list[Line]:
    parts = window.split(b"\n")
    lines: list[Line] = []
    offset = base
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        # The first part of a window that does not start the file may be a line's tail.
        if (last and not part) or (index == 0 and not whole):
            offset += len(part) + 1
            continue
        lines.append(Line(offset, part, terminated=not last))
        offset += len(part) + 1
    return lines
