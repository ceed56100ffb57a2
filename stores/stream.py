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
``\\n``. An owner verifies its chain on those bytes with one code path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stores.errors import DamagedTail
from stores.local import (
    LinkReader,
    LocalRecordFile,
    Reader,
    RecordBuilder,
    RecoveryBuilder,
    Torn,
    sha256_hex,
)


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
        self, records: Sequence[RecordBuilder], *, recovery: RecoveryBuilder | None = None
    ) -> list[bytes]:
        """Append ``records`` durably (after a recovery record if a torn line is set aside)."""
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
        self, records: Sequence[RecordBuilder], *, recovery: RecoveryBuilder | None = None
    ) -> list[bytes]:
        self._file.path.parent.mkdir(parents=True, exist_ok=True)
        with self._file.writing() as appender:
            return appender.append(records, recovery=recovery)


def _torn_line(reader: Reader, torn: Torn | None) -> TornLine | None:
    if torn is None:
        return None
    data = reader.read(torn.offset, torn.offset + torn.length)
    return TornLine(torn.offset, torn.length, sha256_hex(data), torn.reason)
