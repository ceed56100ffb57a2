"""The log itself: appending events, signing checkpoints, reading entries, verifying.

Its lines are a record stream (:func:`stores.select.open_stream`): by default a
local record file (lock, fsync, the torn-tail rule) with the checkpoint file and
its history beside it (:class:`_FileStore`); with a PostgreSQL store configured,
three streams in the server (:class:`_ServerStore`): the log, every checkpoint
state in order (the newest is the current one) and the history of signed heads.
The hash chain, the Merkle checkpoints and their signatures are the same bytes in
both, checked by the same code.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from audits.canonical import canonical_bytes, sha256_hex
from audits.files import atomic_write_json
from audits.keys import PublicKey, SigningKey
from audits.log.errors import (
    CheckpointFormatError,
    LogFormatError,
    NewTreeRefused,
    NoCheckpoint,
    NoTrustedKeys,
    TamperDetected,
    UntrustedCheckpoint,
)
from audits.log.lines import Malformed, entry_link, entry_link_or_none
from audits.log.records import (
    ZERO_HASH,
    AuditEntry,
    AuditEvent,
    CheckpointState,
    EventKind,
    SignatureStatus,
    SignedCheckpoint,
    TreeHead,
    VerifyReport,
    first_error,
    utc_text,
)
from audits.log.verification import Snapshot, verify_snapshot
from audits.merkle import CompactRange, leaf_hash
from stores.errors import DamagedTail
from stores.files import read_store_file
from stores.local import (
    EMPTY_TAIL,
    LocalRecordFile,
    Reader,
    RecordBuilder,
    RecoveryBuilder,
    SetAside,
    Torn,
)
from stores.postgres import PostgresStream
from stores.select import open_stream
from stores.stream import LocalStream, RecordStream, SnapshotReader, StreamSession, TornGuard

# What the log is read through: the local file's reader, or a server snapshot's.
LogReader = Reader | SnapshotReader


class AuditLog:
    """An append-only audit log at ``path`` whose signed checkpoint lives at ``checkpoint_path``.

    The checkpoint history is kept beside the checkpoint file
    (``<checkpoint stem>.history.jsonl``). All methods are safe to call from
    several processes at once.

    ``store_dir`` is the directory whose store configuration applies (the
    checkout's ``.custodian/``; default: the log's directory): with a PostgreSQL
    store configured there, the log and its checkpoints live in the server, as
    the streams named after their paths below it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        checkpoint_path: str | os.PathLike[str],
        *,
        store_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.checkpoint_path = Path(checkpoint_path)
        self.history_path = self.checkpoint_path.with_suffix(".history.jsonl")
        root = None if store_dir is None else Path(store_dir)
        stream = open_stream(self.path, entry_link_or_none, root=root)
        self._store = _STORES[stream.backend](self, stream, root)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, {str(self.checkpoint_path)!r})"

    # ---- writing

    def append(self, event: AuditEvent) -> AuditEntry:
        """Append ``event`` durably (fsync) and return the entry as written.

        A torn last line left by a crash is set aside first and recorded by a
        ``recovery`` event (see :mod:`audits.log`).
        """
        written: list[AuditEntry] = []

        def entry(event: AuditEvent) -> RecordBuilder:
            def build(seq: int, prev: str) -> bytes:
                # The time is taken under the lock, so times never go back along the chain.
                made = AuditEntry(seq=seq, time=datetime.now(UTC), prev=prev, event=event)
                written.append(made)
                return made.line()

            return build

        def recovery(aside: SetAside) -> RecordBuilder:
            return entry(_recovery_event(aside, event))

        try:
            self._store.append([entry(event)], recovery, self._guard_covered)
        except DamagedTail as exc:
            # Two damaged lines at the end cannot come from a crash: to the log's callers,
            # tampering.
            raise TamperDetected(f"{exc} (run verify)") from None
        return written[-1]

    def write_checkpoint(
        self, signing_key: SigningKey, trusted_keys: Iterable[PublicKey] = ()
    ) -> SignedCheckpoint:
        """Sign a tree head over every complete entry and store it apart from the log.

        The previous checkpoint must be signed by ``signing_key`` or one of
        ``trusted_keys`` (after a key rotation); otherwise, or when the log no
        longer extends what it covers, raise :class:`TamperDetected` and sign nothing.
        """
        trusted = _key_map([signing_key.public_key, *trusted_keys])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._store.locked(), self._store.reading() as reader:
            tail = reader.tail if reader is not None else None
            if tail is not None and tail.damaged_before_torn:
                raise TamperDetected(f"{reader.damaged_tail_message()} (run verify)")
            end = tail.end if tail is not None else 0
            state = self._read_state()
            if state is not None and state.log_bytes > end:
                raise TamperDetected(
                    f"{self.where} holds {end} intact bytes but its signed checkpoint "
                    f"covers {state.log_bytes}: the log was truncated; refusing to sign"
                )
            tree, start, prev = self._resume(reader, state, trusted)
            if reader is not None:
                _extend(reader, tree, start, end, prev)
            head = TreeHead(
                key_fingerprint=signing_key.fingerprint,
                tree_size=tree.size,
                root_hash=tree.root().hex(),
                time=utc_text(datetime.now(UTC)),
            )
            signed = SignedCheckpoint(
                tree_head=head,
                signature=base64.b64encode(signing_key.sign(head.signed_bytes())).decode("ascii"),
            )
            state = CheckpointState(
                checkpoint=signed,
                compact_range=[value.hex() for value in tree.hashes],
                log_bytes=end,
            )
            self._store.put_checkpoint(state, signed)
        return signed

    def open_tree(
        self,
        signing_key: SigningKey,
        witnessed: Callable[[], Sequence[SignedCheckpoint]] = tuple,
    ) -> SignedCheckpoint | None:
        """Make sure a signed tree exists before anything is appended; refuse to start one
        over history.

        With a checkpoint, nothing to do (None). With none, a new tree is started
        only over an empty log (a signed head of size 0) and only if no checkpoint
        committed elsewhere (``witnessed()``, e.g. those carried by sign-offs)
        names a non-empty one: otherwise deleting the checkpoint files, or the
        whole log, and letting the next command sign would launder any rewrite.
        Raises :class:`NewTreeRefused`; :meth:`adopt` is the person's way out.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._store.locked():
            with self._store.reading() as reader:
                if self._read_state() is not None:
                    return None
                if reader is not None and (reader.tail.end or reader.tail.torn is not None):
                    raise NewTreeRefused(
                        f"{self.where} holds entries but {self._store.checkpoint_label} "
                        f"is missing: "
                        f"signing them now would vouch for whatever they say; restore the "
                        f"checkpoint files, or have a person adopt the log "
                        f"(custodian audit adopt --reason TEXT)"
                    )
            named = [c.tree_head for c in witnessed() if c.tree_head.tree_size > 0]
            if named:
                largest = max(named, key=lambda head: head.tree_size)
                raise NewTreeRefused(
                    f"{self.where} is empty but committed checkpoints witness a log of "
                    f"{largest.tree_size} entries (root {largest.root_hash[:16]}...): the log "
                    f"was deleted; restore it, or have a person adopt a new one "
                    f"(custodian audit adopt --reason TEXT)"
                )
            # The lock is reentrant: nobody appends between the check and the empty head.
            return self.write_checkpoint(signing_key)

    def adopt(self, signing_key: SigningKey) -> SignedCheckpoint:
        """Sign a new tree over whatever the log holds now, setting the old checkpoints aside.

        Only for a person who decided to (``custodian audit adopt``, which logs
        the decision): the new head vouches for entries nobody checked. The old
        checkpoint files are kept as ``<name>.adopted-N`` for whoever investigates.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._store.locked():
            self._store.set_checkpoints_aside()
            return self.write_checkpoint(signing_key)

    def current_checkpoint(self) -> SignedCheckpoint | None:
        """The newest signed head, as the checkpoint file holds it (unverified)."""
        with self._store.locked():
            state = self._read_state()
        return None if state is None else state.checkpoint

    def export_checkpoint(self, out_path: str | os.PathLike[str]) -> SignedCheckpoint:
        """Write the latest signed checkpoint to ``out_path`` for anchoring outside the project."""
        with self._store.locked():
            state = self._read_state()
        if state is None:
            raise NoCheckpoint(f"no signed checkpoint at {self._store.checkpoint_label} yet")
        atomic_write_json(out_path, state.checkpoint.model_dump(mode="json"))
        return state.checkpoint

    # ---- reading

    def entries(self) -> Iterator[AuditEntry]:
        """Every complete entry in order, validated; a torn last line is not an entry.

        Raises :class:`LogFormatError` at the first line that is not an entry.
        Reading integrity is :meth:`verify`'s job; this is for display.
        """
        with self._store.reading() as reader:
            if reader is None:
                return
            with self._store.reading_lock():
                end = reader.tail.end
            # Entries below ``end`` never change under a writer, so read them unlocked.
            for index, line in enumerate(reader.lines(0, end)):
                try:
                    yield AuditEntry.model_validate_json(line.data)
                except ValidationError as exc:
                    raise LogFormatError(
                        f"{self.where}: entry {index} (byte {line.offset}) is not an audit "
                        f"entry: {first_error(exc)}"
                    ) from exc

    def search(self, needle: bytes, entries: int) -> Iterator[tuple[int, bytes]]:
        """``(entry number, line)`` of each of the first ``entries`` entries whose line holds
        ``needle`` (e.g. ``b'"privacy_spend"'``), found without parsing the others."""
        with self._store.reading() as reader:
            if reader is None:
                return
            with self._store.reading_lock():
                end = reader.tail.end
            for index, line in reader.search(needle, 0, end):
                if index >= entries:
                    return
                if line.terminated:
                    yield index, line.data

    def read(
        self,
        *,
        stage: str | None = None,
        since: datetime | None = None,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        """Entries for a human timeline, filtered by stage, actor and time (``since`` inclusive).

        ``since`` must be timezone-aware: a naive time would be a guess.
        """
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        return [
            entry
            for entry in self.entries()
            if (stage is None or entry.event.stage == stage)
            and (actor is None or entry.event.actor == actor)
            and (since is None or entry.time >= since)
        ]

    # ---- verification

    def verify(
        self, public_keys: Iterable[PublicKey], against: SignedCheckpoint | None = None
    ) -> VerifyReport:
        """Check the whole log; fail closed.

        Checks that every line is an entry, that sequence numbers and ``prev``
        hashes chain, that every signed head (checkpoint file and history) is
        signed by one of ``public_keys`` and matches the Merkle root of the
        entries it covers, and, with ``against`` (an exported checkpoint, see
        :func:`audits.log.load_checkpoint`), that the log is a consistent extension of it.
        """
        trusted = _key_map(public_keys)
        if not trusted:
            raise NoTrustedKeys("verification needs at least one trusted public key")
        with self._store.reading() as reader:
            with self._store.reading_lock():
                snapshot = Snapshot(
                    tail=reader.tail if reader is not None else EMPTY_TAIL,
                    state_bytes=self._store.state_bytes(),
                    history_bytes=self._store.history_bytes(),
                    checkpoint_path=self.checkpoint_path,
                    history_path=self.history_path,
                )
            # Below ``tail.end`` the log only ever grows, so the scan runs unlocked.
            # A server snapshot reads like the file (stores.stream.SnapshotReader).
            return verify_snapshot(reader, snapshot, trusted, against)  # type: ignore[arg-type]

    def last_checkpoint(self) -> SignedCheckpoint | None:
        """The newest signed head as stored, for a status line (unverified; no lock taken)."""
        state = self._read_state()
        return None if state is None else state.checkpoint

    @property
    def where(self) -> str:
        """Where the log's lines live, for messages: a path or a server stream."""
        return self._store.label

    # ---- internals

    def _guard_covered(self, torn: Torn) -> None:
        """Torn bytes inside what a signed checkpoint covers are no crash: refuse to repair."""
        state = self._read_state()
        if state is not None and torn.offset < state.log_bytes:
            raise TamperDetected(
                f"{self.where}: damaged bytes at offset {torn.offset} lie inside the "
                f"{state.log_bytes} bytes a signed checkpoint covers; that is not a crash, "
                f"refusing to repair (run verify)"
            )

    def _resume(
        self,
        reader: LogReader | None,
        state: CheckpointState | None,
        trusted: Mapping[str, PublicKey],
    ) -> tuple[CompactRange, int, str]:
        """Compact range, byte offset and chain hash where the previous checkpoint ended."""
        if state is None:
            if self._store.history_bytes():
                # Written only after the checkpoint file, so this is no crash:
                # starting afresh would sign whatever the log holds now.
                raise TamperDetected(
                    f"{self._store.checkpoint_label} is missing but "
                    f"{self._store.history_label} holds "
                    f"signed checkpoints; restore it (run verify) before signing again"
                )
            return CompactRange(), 0, ZERO_HASH
        head = state.checkpoint.tree_head
        status = state.checkpoint.signature_status(trusted)
        if status is not SignatureStatus.VALID:
            raise UntrustedCheckpoint(
                f"{self._store.checkpoint_label}: {status.value.replace('_', ' ')} "
                f"(signer {head.key_fingerprint}); refusing to extend it"
            )
        try:
            tree = CompactRange(head.tree_size, [bytes.fromhex(h) for h in state.compact_range])
        except ValueError as exc:
            raise TamperDetected(f"{self._store.checkpoint_label}: {exc}") from exc
        if tree.root().hex() != head.root_hash:
            raise TamperDetected(
                f"{self._store.checkpoint_label}: compact range does not match its root"
            )
        if head.tree_size == 0:
            return tree, 0, ZERO_HASH
        last = reader.line_ending_at(state.log_bytes) if reader is not None else None
        link = entry_link_or_none(last.data) if last is not None else None
        if last is None or link is None or link.seq != head.tree_size - 1:
            raise TamperDetected(
                f"{self.where}: entry {head.tree_size - 1} no longer ends at byte "
                f"{state.log_bytes}, where the signed checkpoint says it does; refusing to sign"
            )
        return tree, state.log_bytes, sha256_hex(last.data)

    def _read_state(self) -> CheckpointState | None:
        data = self._store.state_bytes()
        if data is None:
            return None
        try:
            return CheckpointState.model_validate_json(data)
        except ValidationError as exc:
            raise CheckpointFormatError(
                f"{self._store.checkpoint_label} is not a checkpoint: {first_error(exc)}"
            ) from exc


class _LogStore(Protocol):
    """Where an :class:`AuditLog`'s lines and checkpoints are kept."""

    @property
    def label(self) -> str:
        """Where the lines live, for messages: a path or a server stream."""
        ...

    @property
    def checkpoint_label(self) -> str:
        """Where the current checkpoint lives, for messages."""
        ...

    @property
    def history_label(self) -> str:
        """Where the signed-head history lives, for messages."""
        ...

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the log exclusively (reentrant): nobody appends or checkpoints meanwhile."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[LogReader | None]:
        """A reader of the log's lines; None when there is no log at all."""
        ...

    def reading_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a reader reads the intact end that it may then scan unlocked."""
        ...

    def append(
        self, records: Sequence[RecordBuilder], recovery: RecoveryBuilder, guard: TornGuard
    ) -> list[bytes]:
        """Append durably, under the torn-tail rule where a torn line can exist."""
        ...

    def state_bytes(self) -> bytes | None:
        """The current checkpoint state as stored, or None before the first checkpoint."""
        ...

    def history_bytes(self) -> bytes | None:
        """Every signed head ever written, one per line, or None before the first."""
        ...

    def put_checkpoint(self, state: CheckpointState, signed: SignedCheckpoint) -> None:
        """Store a new checkpoint state, then its head in the history (the log is locked)."""
        ...

    def set_checkpoints_aside(self) -> None:
        """Keep the checkpoints so far for investigators and start with none (adoption)."""
        ...


class _FileStore:
    """The local files: the log's record file, the checkpoint file and its history file."""

    def __init__(self, log: AuditLog, stream: RecordStream, root: Path | None) -> None:
        assert isinstance(stream, LocalStream)
        del root
        self._log = log
        self._lines = stream.file
        # Written under the log's lock: it has no lock of its own.
        self._history = LocalRecordFile(log.history_path, None)

    @property
    def label(self) -> str:
        return str(self._log.path)

    @property
    def checkpoint_label(self) -> str:
        return str(self._log.checkpoint_path)

    @property
    def history_label(self) -> str:
        return self._log.history_path.name

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self._lines.locked()

    def reading(self) -> contextlib.AbstractContextManager[Reader | None]:
        return self._lines.reading()

    @contextlib.contextmanager
    def reading_lock(self) -> Iterator[None]:
        # Where the lock file cannot be created, no writer can append either.
        if os.access(self._log.path.parent, os.W_OK):
            with self._lines.locked():
                yield
        else:
            yield

    def append(
        self, records: Sequence[RecordBuilder], recovery: RecoveryBuilder, guard: TornGuard
    ) -> list[bytes]:
        # The record file's own append path (lock, append, unlock), as before the store existed.
        return self._lines.append(records, recovery=recovery, guard=guard)

    def state_bytes(self) -> bytes | None:
        return read_store_file(self._log.checkpoint_path)

    def history_bytes(self) -> bytes | None:
        return read_store_file(self._log.history_path)

    def put_checkpoint(self, state: CheckpointState, signed: SignedCheckpoint) -> None:
        # The checkpoint file first: a crash before the history record costs
        # only some localisation, never the newest head.
        atomic_write_json(self._log.checkpoint_path, state.model_dump(mode="json"))
        with self._history.writing() as history:
            # A torn history record was never acknowledged: set aside, nothing to record.
            record = canonical_bytes(signed.model_dump(mode="json"))
            history.append([lambda seq, prev: record])

    def set_checkpoints_aside(self) -> None:
        for old in (self._log.checkpoint_path, self._log.history_path):
            if read_store_file(old) is not None:
                os.replace(old, _free_name(old, ".adopted-"))


class _ServerStore:
    """Three streams in a PostgreSQL store: the log, the checkpoint states, the history.

    ``locked`` is one session on the log stream (a transaction holding its
    advisory lock), so writers on every machine queue there; checkpoints are
    appended to their streams while it is held, states before history as with
    files. ``reading`` takes the log and both checkpoint streams under that lock
    and pins the checkpoints for the reader's lifetime, so a verifier never sees a
    checkpoint newer than the entries it read. Nothing can be torn, renamed or
    deleted there.
    """

    def __init__(self, log: AuditLog, stream: RecordStream, root: Path | None) -> None:
        self._log = log
        self._lines = stream
        self._states = open_stream(log.checkpoint_path, None, root=root)
        self._history = open_stream(log.history_path, None, root=root)
        self._held: StreamSession | None = None
        self._pinned: tuple[bytes | None, bytes | None] | None = None

    @property
    def label(self) -> str:
        return self._lines.label

    @property
    def checkpoint_label(self) -> str:
        return self._states.label

    @property
    def history_label(self) -> str:
        return self._history.label

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if self._held is not None:
            yield
            return
        with self._lines.session() as session:
            self._held = session
            try:
                yield
            finally:
                self._held = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[SnapshotReader]:
        with self.locked():
            assert self._held is not None
            raw = self._held.snapshot().raw
            pinned = (self._read_state(), self._read_history())
        outer, self._pinned = self._pinned, pinned
        try:
            yield SnapshotReader(raw, entry_link_or_none)
        finally:
            self._pinned = outer

    def reading_lock(self) -> contextlib.AbstractContextManager[None]:
        # A snapshot is one consistent read already.
        return contextlib.nullcontext()

    def append(
        self, records: Sequence[RecordBuilder], recovery: RecoveryBuilder, guard: TornGuard
    ) -> list[bytes]:
        with self._session() as session:
            return session.append(records, recovery=recovery, guard=guard)

    def state_bytes(self) -> bytes | None:
        return self._pinned[0] if self._pinned is not None else self._read_state()

    def history_bytes(self) -> bytes | None:
        return self._pinned[1] if self._pinned is not None else self._read_history()

    def _read_state(self) -> bytes | None:
        lines = _stream_lines(self._states)
        return lines[-1] if lines else None

    def _read_history(self) -> bytes | None:
        lines = _stream_lines(self._history)
        return b"".join(line + b"\n" for line in lines) if lines else None

    def put_checkpoint(self, state: CheckpointState, signed: SignedCheckpoint) -> None:
        for stream, record in (
            (self._states, canonical_bytes(state.model_dump(mode="json"))),
            (self._history, canonical_bytes(signed.model_dump(mode="json"))),
        ):
            with stream.session() as session:
                session.append([lambda seq, prev, record=record: record])
        self._pinned = None  # what a reader pinned is older than this

    def set_checkpoints_aside(self) -> None:
        raise NewTreeRefused(
            f"{self._states.label} keeps every checkpoint and nothing there can be set aside: "
            f"a new tree cannot be adopted in a server store (restore the log instead)"
        )

    def _session(self) -> contextlib.AbstractContextManager[StreamSession]:
        if self._held is not None:
            return contextlib.nullcontext(self._held)
        return self._lines.session()


def _stream_lines(stream: RecordStream) -> list[bytes]:
    with stream.session() as session:
        return session.snapshot().raw.split(b"\n")[:-1]


# Backend name (stores.select.BACKENDS) -> how the log keeps its lines and checkpoints there.
_STORES: dict[str, Callable[[AuditLog, RecordStream, Path | None], _LogStore]] = {
    LocalStream.backend: _FileStore,
    PostgresStream.backend: _ServerStore,
}


def _free_name(path: Path, infix: str) -> Path:
    number = 1
    while (candidate := path.with_name(f"{path.name}{infix}{number}")).exists():
        number += 1
    return candidate


def load_checkpoint(path: str | os.PathLike[str]) -> SignedCheckpoint:
    """Read a checkpoint written by :meth:`AuditLog.export_checkpoint`."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise CheckpointFormatError(f"cannot read checkpoint {target}: {exc.strerror}") from exc
    try:
        return SignedCheckpoint.model_validate_json(data)
    except ValidationError as exc:
        raise CheckpointFormatError(
            f"{target} is not a signed checkpoint: {first_error(exc)}"
        ) from exc


def _recovery_event(aside: SetAside, event: AuditEvent) -> AuditEvent:
    """The ``recovery`` event naming torn bytes set aside, logged by the writer that found them."""
    return AuditEvent(
        actor=event.actor,
        command=event.command,
        stage=event.stage,
        kind=EventKind.RECOVERY,
        details={
            "reason": aside.reason,
            "entry": aside.seq,
            "offset": aside.offset,
            "length": aside.length,
            "sha256": aside.sha256,
            "moved_to": aside.moved_to.name,
        },
    )


def _extend(reader: LogReader, tree: CompactRange, start: int, end: int, prev: str) -> None:
    """Add the entries in ``[start, end)`` to ``tree``, refusing a broken chain."""
    for line in reader.lines(start, end):
        try:
            seq, line_prev = entry_link(line.data)
        except Malformed as exc:
            where = f"entry {tree.size} (byte {line.offset})"
            raise TamperDetected(f"{where}: {exc}; refusing to sign") from exc
        if seq != tree.size or line_prev != prev:
            where = f"entry {tree.size} (byte {line.offset})"
            raise TamperDetected(f"{where}: breaks the hash chain; refusing to sign")
        tree.append(leaf_hash(line.data))
        prev = sha256_hex(line.data)


def _key_map(keys: Iterable[PublicKey]) -> dict[str, PublicKey]:
    return {key.fingerprint: key for key in keys}
