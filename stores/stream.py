"""The store interface: one append-only, hash-chained record stream, whatever holds it.

An owner (the privacy ledger) opens an exclusive :meth:`RecordStream.session`:
it reads a :class:`Snapshot` (every intact record line, in order), decides, and
appends with :meth:`StreamSession.append`. Everything inside one session is one
critical section: no other writer appends between the read and the append, on
any backend. So a budget check and the reservation it allows are atomic.

Backends (registered in :data:`BACKENDS`, picked by :mod:`stores.select`):

``local``
    The record file of :mod:`stores.local`: the session holds its ``flock``;
    a torn last line is reported in the snapshot and set aside by the next
    append (the store's one torn-tail rule).
``postgresql``
    :mod:`stores.postgres`: the session is one database transaction holding
    the stream's advisory lock; an append is durable when the commit returns.
    A transaction never tears, so its snapshots never report a torn line.

In both, ``Snapshot.raw`` is the same bytes: the record lines, each followed by
``\\n``. An owner verifies its chain on those bytes with one code path, and
:class:`SnapshotReader` reads them with the methods of :class:`stores.local.Reader`
(line offsets are offsets into ``raw``), so code written for the local reader
reads a server snapshot unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stores.errors import DamagedTail
from stores.local import (
    EMPTY_TAIL,
    Line,
    LinkReader,
    LocalRecordFile,
    Reader,
    RecordBuilder,
    RecoveryBuilder,
    Tail,
    Torn,
    sha256_hex,
)

# Refuses (by raising) to set aside a torn line, e.g. one inside a range a signature covers.
TornGuard = Callable[[Torn], None]


@dataclass(frozen=True)
class TornLine:
    """A torn last line (local files only): where, how long, and the SHA-256 of its bytes."""

    offset: int
    length: int
    sha256: str
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """The stream as the session sees it: intact record lines, newline-terminated, in order."""

    raw: bytes
    torn: TornLine | None = None


class StreamSession(Protocol):
    """An exclusive session on one stream: read once, then append."""

    def snapshot(self) -> Snapshot:
        """Every intact record line; :class:`DamagedTail` if the end cannot be a crash's."""
        ...

    def append(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: TornGuard | None = None,
    ) -> list[bytes]:
        """Append ``records`` durably (after a recovery record if a torn line is set aside;
        ``guard`` may refuse setting it aside)."""
        ...


class RecordStream(Protocol):
    """A named append-only record stream in some backend."""

    @property
    def label(self) -> str:
        """Where the stream lives, for messages (a path, or ``postgresql:.../stream``)."""
        ...

    @property
    def backend(self) -> str:
        """The backend's name in :data:`stores.select.BACKENDS`."""
        ...

    def session(self) -> contextlib.AbstractContextManager[StreamSession]:
        """Hold the stream exclusively for one read-decide-append."""
        ...


class LocalStream:
    """A stream in a local file: :class:`stores.local.LocalRecordFile` behind the interface."""

    backend = "local"

    def __init__(self, path: str | Path, link: LinkReader, *, lock_timeout: float = -1) -> None:
        self.path = Path(path)
        self._file = LocalRecordFile(self.path, link, lock_timeout=lock_timeout)

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def file(self) -> LocalRecordFile:
        """The record file itself, for owners that read it by byte offset without a session."""
        return self._file

    @contextlib.contextmanager
    def session(self) -> Iterator[_LocalSession]:
        with self._file.locked():
            yield _LocalSession(self._file)


class _LocalSession:
    def __init__(self, file: LocalRecordFile) -> None:
        self._file = file

    def snapshot(self) -> Snapshot:
        with self._file.reading() as reader:
            if reader is None:
                return Snapshot(b"")
            tail = reader.tail
            if tail.damaged_before_torn:
                raise DamagedTail(reader.damaged_tail_message())
            raw = reader.read(0, tail.end)
            return Snapshot(raw, _torn_line(reader, tail.torn))

    def append(
        self,
        records: Sequence[RecordBuilder],
        *,
        recovery: RecoveryBuilder | None = None,
        guard: TornGuard | None = None,
    ) -> list[bytes]:
        self._file.path.parent.mkdir(parents=True, exist_ok=True)
        return self._file.append_held(records, recovery=recovery, guard=guard)


def _torn_line(reader: Reader, torn: Torn | None) -> TornLine | None:
    if torn is None:
        return None
    data = reader.read(torn.offset, torn.offset + torn.length)
    return TornLine(torn.offset, torn.length, sha256_hex(data), torn.reason)


class SnapshotReader:
    """Reads a snapshot's intact lines as :class:`stores.local.Reader` reads a file.

    Offsets are byte offsets into ``raw``. A snapshot holds only whole lines, so its
    tail is never torn; ``link`` reads the chain fields of the last line.
    """

    def __init__(self, raw: bytes, link: LinkReader | None) -> None:
        if raw and not raw.endswith(b"\n"):
            raise ValueError("a snapshot ends with a newline")
        self._raw = raw
        self.size = len(raw)
        self.tail = _snapshot_tail(raw, link)

    def read(self, start: int, end: int) -> bytes:
        """The bytes ``[start, end)``."""
        return self._raw[start:end]

    def lines(self, start: int, end: int) -> Iterator[Line]:
        """Lines of the bytes ``[start, end)``, in order."""
        offset = start
        *complete, rest = self._raw[start:end].split(b"\n")
        for data in complete:
            yield Line(offset, data, terminated=True)
            offset += len(data) + 1
        if rest:
            yield Line(offset, rest, terminated=False)

    def search(self, needle: bytes, start: int, end: int) -> Iterator[tuple[int, Line]]:
        """``(index, line)`` of each line in ``[start, end)`` that holds ``needle``."""
        for index, line in enumerate(self.lines(start, end)):
            if needle in line.data:
                yield index, line

    def line_ending_at(self, end: int) -> Line | None:
        """The line whose newline is the byte just before ``end``, if there is one."""
        if end <= 0 or end > self.size or self._raw[end - 1] != ord("\n"):
            return None
        begin = self._raw.rfind(b"\n", 0, end - 1) + 1
        return Line(begin, self._raw[begin : end - 1], terminated=True)


def _snapshot_tail(raw: bytes, link: LinkReader | None) -> Tail:
    if not raw:
        return EMPTY_TAIL
    begin = raw.rfind(b"\n", 0, len(raw) - 1) + 1
    last = raw[begin:-1]
    found = link(last) if link is not None else None
    next_seq = found.seq + 1 if found is not None else 0
    return Tail(end=len(raw), next_seq=next_seq, next_prev=sha256_hex(last))
