"""Tamper-evident, append-only audit log with Ed25519-signed Merkle checkpoints.

Files
-----
``log``
    One entry per line: the RFC 8785 canonical JSON of
    ``{"seq": n, "time": UTC ISO, "prev": SHA-256 of entry n-1's line, "event": {...}}``
    followed by ``\\n``. Entry 0's ``prev`` is 64 zeros. The event is nested
    rather than flattened so that no event field can ever clash with a chain field.
``log.lock``
    The file lock every writer holds while it reads the tail and appends.
``checkpoint``
    The latest signed tree head, kept apart from the log: ``tree_size`` and
    the RFC 9162 Merkle ``root_hash`` over the leaves ``SHA-256(0x00 || line)``
    of entries ``[0, tree_size)``, the signer's key fingerprint and time, and an
    Ed25519 signature over the head's canonical JSON. Beside the signed head it
    keeps two unsigned hints, the Merkle compact range (one hash per set bit of
    ``tree_size``) and the byte length of the covered prefix, so the next
    checkpoint is computed from the new entries only; the hints are checked
    against the signed root before use. Replaced atomically.
``checkpoint.history.jsonl``
    Every signed head ever written, append-only. Verification checks each one,
    which localises a change to the entries between the last head that still
    matches and the first that does not (a single entry when checkpoints are
    written after every append, one command's entries when after every command).
``log.torn-N``
    Bytes of a torn last line, set aside by the writer that found them.

Checkpoints and the log
-----------------------
Checkpoints are never written into the log: a head covering entries
``[0, n)`` is stored only in the two checkpoint files, so there is no
circularity and no entry is left behind uncovered by its own checkpoint. The
writer extends the previous head through its compact range and never re-hashes
the prefix it covers, so it cannot launder an edit made there: the new root still
commits to the original entries and verification of the edited log fails. It
refuses to sign at all when the previous head is not signed by a key it trusts,
when the log no longer extends the covered bytes, when a new entry breaks the
chain, or when the checkpoint file is gone but the history is not
(:class:`TamperDetected`). It writes the checkpoint file before the history
record, so a crash between the two loses a history record, never the newest head.

Durability and concurrency
--------------------------
Each append holds an exclusive file lock (``flock``), reads only the tail,
writes the line with one ``O_APPEND`` write, and ``fsync``s before returning:
an entry that :meth:`AuditLog.append` returned survives a crash, and writers in
several processes neither interleave nor lose entries. A crash mid-write can
leave at most the last line torn (no newline, or not valid JSON). Verification
reports it as :attr:`ProblemKind.TORN_TAIL` with its byte offset and entry
number, distinct from tampering; the next writer copies the torn bytes to
``log.torn-N``, truncates them and appends a ``recovery`` event recording their
offset, length and SHA-256 before its own event. Torn bytes inside the range a
checkpoint covers cannot come from a crash, so the writer refuses to touch them.

Threat model
------------
*Someone who edits the log without the key* (edits, deletes, inserts, reorders,
duplicates entries, even re-chaining every later ``prev`` and renumbering)
changes the Merkle root of a prefix a signed head covers: verification fails,
naming the entry or range. An edit that is not re-chained is also named
exactly by the chain check. They can append forged entries after the last
checkpoint: verification reports those as uncovered (a warning), and the next
checkpoint, which cannot tell them from genuine ones, signs them. Garbling the
last, uncovered line looks like a crash: it is reported as a torn tail, and the
next writer keeps the bytes and records them in a ``recovery`` event.

*Someone who truncates the log* leaves it shorter than a signed head: verification
reports the missing entries. Cutting mid-line is reported as torn *and* truncated,
and writers refuse to repair it.

*Someone who rewrites both the log and the checkpoint files* but has no key can
only roll everything back to a state that was once signed (an older head and
the log prefix it covers) and append unsigned entries after it, or delete the
checkpoint files so that verification fails closed for lack of a checkpoint
until the next writer signs whatever the log then holds. Neither is detectable
from the project alone: export a checkpoint (:meth:`AuditLog.export_checkpoint`)
and keep it outside the attacker's reach (a release attachment, a ticket, a
commit in another repository, a transparency log). ``verify(against=...)``
then proves with an RFC 9162 consistency proof that the log still extends it,
and a rolled-back or rewritten log fails.

*Someone who holds the signing key* can sign any log: locally, a rewritten and
re-signed log verifies. Exported anchors still catch any rewrite of what they
cover; they cannot catch forged entries appended after the newest anchor. The
key's file mode and its home outside the project (:mod:`audits.keys`) are the
protection; after a compromise, make a new key, trust it, and keep verifying
against anchors exported before the compromise.

Times are the writer's clock and prove nothing on their own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from filelock import FileLock
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    NonNegativeInt,
    StringConstraints,
    ValidationError,
    computed_field,
    field_serializer,
    field_validator,
)

from audits.canonical import NotCanonicalizable, canonical_bytes, sha256_hex
from audits.errors import AuditError
from audits.files import _fsync_directory, atomic_write_json
from audits.keys import PublicKey, SigningKey
from audits.merkle import CompactRange, consistency_proof, leaf_hash, verify_consistency

ZERO_HASH = "0" * 64
CHECKPOINT_FORMAT = "custodian-audit-checkpoint/v1"
_ENTRY_KEYS = frozenset({"seq", "time", "prev", "event"})
_READ_CHUNK = 1 << 20
_TAIL_CHUNK = 1 << 16

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
GitCommit = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})$")]


class TamperDetected(AuditError):
    """The log or its checkpoint is not what was written; the writer refuses to go on."""


class UntrustedCheckpoint(TamperDetected):
    """The existing checkpoint is not signed by a key the writer trusts."""


class CheckpointFormatError(AuditError):
    """A checkpoint file cannot be parsed."""


class NoCheckpoint(AuditError):
    """No signed checkpoint has been written yet."""


class NoTrustedKeys(AuditError):
    """Verification was asked to trust no key at all; it would prove nothing."""


class LogFormatError(AuditError):
    """An entry of the log does not parse into an :class:`AuditEntry`."""


# --------------------------------------------------------------------------- records


class EventKind(StrEnum):
    """What an event records."""

    COMMAND_STARTED = "command_started"
    COMMAND_SUCCEEDED = "command_succeeded"
    COMMAND_FAILED = "command_failed"
    REFUSED = "refused"
    DECISION = "decision"
    WAIVER = "waiver"
    RECOVERY = "recovery"


class AuditEvent(BaseModel):
    """What a caller logs: who did what, on which inputs and outputs, and what came of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: str = Field(min_length=1)
    command: str = Field(min_length=1)
    kind: EventKind
    stage: str | None = None
    inputs: dict[str, Sha256Hex] = Field(default_factory=dict, description="path -> SHA-256")
    outputs: dict[str, Sha256Hex] = Field(default_factory=dict, description="path -> SHA-256")
    params_sha256: Sha256Hex | None = None
    git_commit: GitCommit | None = None
    details: dict[str, JsonValue] = Field(default_factory=dict)
    error: str | None = None

    @field_validator("details")
    @classmethod
    def _details_have_canonical_form(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        # Fail at construction, not halfway through an append.
        try:
            canonical_bytes(value)
        except NotCanonicalizable as exc:
            raise ValueError(str(exc)) from exc
        return value


class AuditEntry(BaseModel):
    """One line of the log: an event with its place in the hash chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: NonNegativeInt
    time: AwareDatetime
    prev: Sha256Hex
    event: AuditEvent

    @field_serializer("time")
    def _utc_text(self, value: datetime) -> str:
        return _utc_text(value)

    def line(self) -> bytes:
        """Canonical JSON of the entry, without the trailing newline: the bytes hashed."""
        return canonical_bytes(self.model_dump(mode="json"))


class TreeHead(BaseModel):
    """What a checkpoint signs: the Merkle root of the first ``tree_size`` entries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-audit-checkpoint/v1"] = CHECKPOINT_FORMAT
    key_fingerprint: Sha256Hex
    tree_size: NonNegativeInt
    root_hash: Sha256Hex
    time: str

    @field_validator("time")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        datetime.fromisoformat(value)
        return value

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        return canonical_bytes(self.model_dump(mode="json"))


class SignatureStatus(StrEnum):
    """Outcome of checking a checkpoint's signature against trusted keys."""

    VALID = "valid"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"


class SignedCheckpoint(BaseModel):
    """A tree head and its Ed25519 signature (base64); the form exported for anchoring."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tree_head: TreeHead
    signature: str

    @field_validator("signature")
    @classmethod
    def _signature_is_64_bytes(cls, value: str) -> str:
        if len(_b64decode(value)) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")
        return value

    def signature_status(self, trusted: Mapping[str, PublicKey]) -> SignatureStatus:
        """Whether a trusted key (fingerprint -> key) signed this head."""
        key = trusted.get(self.tree_head.key_fingerprint)
        if key is None:
            return SignatureStatus.UNKNOWN_KEY
        if not key.verify(_b64decode(self.signature), self.tree_head.signed_bytes()):
            return SignatureStatus.BAD_SIGNATURE
        return SignatureStatus.VALID


class _CheckpointState(BaseModel):
    """The checkpoint file: the signed head plus unsigned hints checked against it before use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: SignedCheckpoint
    compact_range: list[Sha256Hex]
    log_bytes: NonNegativeInt


class ProblemKind(StrEnum):
    """Why verification failed; every kind but ``torn_tail`` means the files were altered."""

    TORN_TAIL = "torn_tail"
    MALFORMED_ENTRY = "malformed_entry"
    SEQUENCE = "sequence"
    CHAIN = "chain"
    MISSING_CHECKPOINT = "missing_checkpoint"
    INVALID_CHECKPOINT = "invalid_checkpoint"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    TRUNCATED = "truncated"
    ROOT_MISMATCH = "root_mismatch"
    INCONSISTENT_WITH_ANCHOR = "inconsistent_with_anchor"


class Problem(BaseModel):
    """One reason the log does not verify, with the entry and byte offset where known.

    A problem found by a checkpoint root names a range of entries,
    ``entry..last_entry``; one found on a line names that entry alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ProblemKind
    message: str
    entry: int | None = None
    last_entry: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        return self.message


class TornTail(BaseModel):
    """A damaged last line: where it starts, which entry it would have been, how long it is."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry: int
    offset: int
    length: int
    reason: str


class VerifyReport(BaseModel):
    """Outcome of :meth:`AuditLog.verify`; ``ok`` only if every check passed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: int
    covered: int = Field(description="entries covered by a verified signed checkpoint")
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]
    torn_tail: TornTail | None
    checkpoint: TreeHead | None = Field(description="newest head that verified and matched")

    @computed_field
    @property
    def ok(self) -> bool:
        """True only if no problem was found (uncovered entries are a warning)."""
        return not self.problems

    @computed_field
    @property
    def tampered(self) -> bool:
        """A problem other than a torn last line was found."""
        return any(problem.kind is not ProblemKind.TORN_TAIL for problem in self.problems)

    @computed_field
    @property
    def uncovered(self) -> int:
        """Entries after the newest verified checkpoint."""
        return self.entries - self.covered

    @property
    def first_problem(self) -> Problem | None:
        """The problem at the earliest entry (log-wide problems come last)."""
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        """One line for a human: intact, or the first problem."""
        if self.first_problem is not None:
            extra = len(self.problems) - 1
            more = f" (and {extra} more problem{'s' * (extra > 1)})" if extra else ""
            return f"{self.first_problem.message}{more}"
        signer = f" signed by {self.checkpoint.key_fingerprint[:16]}" if self.checkpoint else ""
        return f"intact: {self.entries} entries, {self.covered} covered by a checkpoint{signer}"


# --------------------------------------------------------------------------- the log


class AuditLog:
    """An append-only audit log at ``path`` whose signed checkpoint lives at ``checkpoint_path``.

    The checkpoint history is kept beside the checkpoint file
    (``<checkpoint stem>.history.jsonl``). All methods are safe to call from
    several processes at once.
    """

    def __init__(
        self, path: str | os.PathLike[str], checkpoint_path: str | os.PathLike[str]
    ) -> None:
        self.path = Path(path)
        self.checkpoint_path = Path(checkpoint_path)
        self.history_path = self.checkpoint_path.with_suffix(".history.jsonl")
        self._lock = FileLock(f"{self.path}.lock")

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, {str(self.checkpoint_path)!r})"

    # ---- writing

    def append(self, event: AuditEvent) -> AuditEntry:
        """Append ``event`` durably (fsync) and return the entry as written.

        A torn last line left by a crash is set aside first and recorded by a
        ``recovery`` event (see the module docstring).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                return self._append_locked(fd, event)
            finally:
                os.close(fd)

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
        with self._lock, _open_or_empty(self.path) as fd:
            size = os.fstat(fd).st_size if fd is not None else 0
            tail = _scan_tail(fd, size) if fd is not None else _EMPTY_TAIL
            if tail.damaged_before_torn:
                raise TamperDetected(_two_damaged_lines(self.path, tail))
            state = self._read_state()
            if state is not None and state.log_bytes > tail.end:
                raise TamperDetected(
                    f"{self.path} holds {tail.end} intact bytes but its signed checkpoint "
                    f"covers {state.log_bytes}: the log was truncated; refusing to sign"
                )
            tree, start, prev = self._resume(fd, state, trusted)
            if fd is not None:
                _extend(fd, tree, start, tail.end, prev)
            head = TreeHead(
                key_fingerprint=signing_key.fingerprint,
                tree_size=tree.size,
                root_hash=tree.root().hex(),
                time=_utc_text(datetime.now(UTC)),
            )
            signed = SignedCheckpoint(
                tree_head=head,
                signature=base64.b64encode(signing_key.sign(head.signed_bytes())).decode("ascii"),
            )
            state = _CheckpointState(
                checkpoint=signed,
                compact_range=[value.hex() for value in tree.hashes],
                log_bytes=tail.end,
            )
            # The checkpoint file first: a crash before the history record costs
            # only some localisation, never the newest head.
            atomic_write_json(self.checkpoint_path, state.model_dump(mode="json"))
            self._append_history(signed)
        return signed

    def export_checkpoint(self, out_path: str | os.PathLike[str]) -> SignedCheckpoint:
        """Write the latest signed checkpoint to ``out_path`` for anchoring outside the project."""
        with self._lock:
            state = self._read_state()
        if state is None:
            raise NoCheckpoint(f"no signed checkpoint at {self.checkpoint_path} yet")
        atomic_write_json(out_path, state.checkpoint.model_dump(mode="json"))
        return state.checkpoint

    # ---- reading

    def entries(self) -> Iterator[AuditEntry]:
        """Every complete entry in order, validated; a torn last line is not an entry.

        Raises :class:`LogFormatError` at the first line that is not an entry.
        Reading integrity is :meth:`verify`'s job; this is for display.
        """
        with self._reading_lock(), _open_or_empty(self.path) as fd:
            if fd is None:
                return
            end = _scan_tail(fd, os.fstat(fd).st_size).end
        # Entries below ``end`` never change under a writer, so read them unlocked.
        with _open_or_empty(self.path) as fd:
            if fd is None:
                return
            for index, line in enumerate(_iter_lines(fd, 0, end)):
                try:
                    yield AuditEntry.model_validate_json(line.data)
                except ValidationError as exc:
                    raise LogFormatError(
                        f"{self.path}: entry {index} (byte {line.offset}) is not an audit entry: "
                        f"{_first_error(exc)}"
                    ) from exc

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
        :func:`load_checkpoint`), that the log is a consistent extension of it.
        """
        trusted = _key_map(public_keys)
        if not trusted:
            raise NoTrustedKeys("verification needs at least one trusted public key")
        with _open_or_empty(self.path) as fd:
            with self._reading_lock():
                size = os.fstat(fd).st_size if fd is not None else 0
                tail = _scan_tail(fd, size) if fd is not None else _EMPTY_TAIL
                state_bytes = _read_optional(self.checkpoint_path)
                history_bytes = _read_optional(self.history_path)
            # Below ``tail.end`` the log only ever grows, so the scan runs unlocked.
            return self._verify_snapshot(fd, tail, state_bytes, history_bytes, trusted, against)

    # ---- internals

    def _append_locked(self, fd: int, event: AuditEvent) -> AuditEntry:
        size = os.fstat(fd).st_size
        tail = _scan_tail(fd, size)
        if tail.damaged_before_torn:
            raise TamperDetected(_two_damaged_lines(self.path, tail))
        seq, prev = tail.next_seq, tail.next_prev
        if tail.torn is not None:
            recovery = self._recovery_event(fd, tail.torn, seq, event)
            seq, prev = _write_entry(fd, seq, prev, recovery)[1:]
        entry, _, _ = _write_entry(fd, seq, prev, event)
        if size == 0:
            _fsync_directory(self.path.parent)
        return entry

    def _recovery_event(self, fd: int, torn: _Torn, entry: int, event: AuditEvent) -> AuditEvent:
        state = self._read_state()
        if state is not None and torn.offset < state.log_bytes:
            raise TamperDetected(
                f"{self.path}: damaged bytes at offset {torn.offset} lie inside the "
                f"{state.log_bytes} bytes a signed checkpoint covers; that is not a crash, "
                f"refusing to repair (run verify)"
            )
        data = os.pread(fd, torn.length, torn.offset)
        aside = _set_aside(self.path, data)
        os.ftruncate(fd, torn.offset)
        os.fsync(fd)
        return AuditEvent(
            actor=event.actor,
            command=event.command,
            stage=event.stage,
            kind=EventKind.RECOVERY,
            details={
                "reason": torn.reason,
                "entry": entry,
                "offset": torn.offset,
                "length": torn.length,
                "sha256": sha256_hex(data),
                "moved_to": aside.name,
            },
        )

    def _resume(
        self, fd: int | None, state: _CheckpointState | None, trusted: Mapping[str, PublicKey]
    ) -> tuple[CompactRange, int, str]:
        """Compact range, byte offset and chain hash where the previous checkpoint ended."""
        if state is None:
            if _read_optional(self.history_path):
                # Written only after the checkpoint file, so this is no crash:
                # starting afresh would sign whatever the log holds now.
                raise TamperDetected(
                    f"{self.checkpoint_path} is missing but {self.history_path.name} holds "
                    f"signed checkpoints; restore it (run verify) before signing again"
                )
            return CompactRange(), 0, ZERO_HASH
        head = state.checkpoint.tree_head
        status = state.checkpoint.signature_status(trusted)
        if status is not SignatureStatus.VALID:
            raise UntrustedCheckpoint(
                f"{self.checkpoint_path}: {status.value.replace('_', ' ')} "
                f"(signer {head.key_fingerprint}); refusing to extend it"
            )
        try:
            tree = CompactRange(head.tree_size, [bytes.fromhex(h) for h in state.compact_range])
        except ValueError as exc:
            raise TamperDetected(f"{self.checkpoint_path}: {exc}") from exc
        if tree.root().hex() != head.root_hash:
            raise TamperDetected(f"{self.checkpoint_path}: compact range does not match its root")
        if head.tree_size == 0:
            return tree, 0, ZERO_HASH
        last = _line_ending_at(fd, state.log_bytes) if fd is not None else None
        if last is None or _seq_or_none(last.data) != head.tree_size - 1:
            raise TamperDetected(
                f"{self.path}: entry {head.tree_size - 1} no longer ends at byte "
                f"{state.log_bytes}, where the signed checkpoint says it does; refusing to sign"
            )
        return tree, state.log_bytes, sha256_hex(last.data)

    def _read_state(self) -> _CheckpointState | None:
        data = _read_optional(self.checkpoint_path)
        if data is None:
            return None
        try:
            return _CheckpointState.model_validate_json(data)
        except ValidationError as exc:
            raise CheckpointFormatError(
                f"{self.checkpoint_path} is not a checkpoint: {_first_error(exc)}"
            ) from exc

    def _append_history(self, signed: SignedCheckpoint) -> None:
        fd = os.open(self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A crash tore the previous record; it was never acknowledged.
                keep = _final_lines(fd, size, 1)[0].offset
                _set_aside(self.history_path, os.pread(fd, size - keep, keep))
                os.ftruncate(fd, keep)
            _write_line(fd, canonical_bytes(signed.model_dump(mode="json")))
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _reading_lock(self) -> Iterator[None]:
        # Where the lock file cannot be created, no writer can append either.
        if os.access(self.path.parent, os.W_OK):
            with self._lock:
                yield
        else:
            yield

    def _verify_snapshot(
        self,
        fd: int | None,
        tail: _Tail,
        state_bytes: bytes | None,
        history_bytes: bytes | None,
        trusted: Mapping[str, PublicKey],
        against: SignedCheckpoint | None,
    ) -> VerifyReport:
        problems = _Problems()
        warnings: list[str] = []
        heads = self._collect_heads(state_bytes, history_bytes, problems, warnings)
        sizes = {head.tree_head.tree_size for _, head in heads}
        if against is not None:
            sizes.add(against.tree_head.tree_size)
        scan = _scan_entries(
            fd, tail.end, sizes, keep_leaves=against is not None, problems=problems
        )
        torn = None
        if tail.torn is not None:
            torn = TornTail(
                entry=scan.count,
                offset=tail.torn.offset,
                length=tail.torn.length,
                reason=tail.torn.reason,
            )
            problems.add(
                ProblemKind.TORN_TAIL,
                f"entry {scan.count} (byte {torn.offset}): torn last line, {torn.length} bytes "
                f"({torn.reason}); a crash interrupted an append, the next append sets it aside",
                entry=scan.count,
                offset=torn.offset,
            )
        if scan.count and not heads and state_bytes is None:
            problems.add(
                ProblemKind.MISSING_CHECKPOINT,
                f"no signed checkpoint covers the {scan.count} entries "
                f"({self.checkpoint_path} is missing)",
            )
        newest = _check_heads(heads, trusted, scan, problems)
        if against is not None:
            _check_anchor(against, trusted, scan, problems)
        covered = newest.tree_size if newest is not None else 0
        if covered < scan.count:
            warnings.append(
                f"{scan.count - covered} entries ({covered}..{scan.count - 1}) are not yet "
                f"covered by a signed checkpoint"
            )
        return VerifyReport(
            entries=scan.count,
            covered=covered,
            problems=problems.in_order(),
            warnings=tuple(warnings),
            torn_tail=torn,
            checkpoint=newest,
        )

    def _collect_heads(
        self,
        state_bytes: bytes | None,
        history_bytes: bytes | None,
        problems: _Problems,
        warnings: list[str],
    ) -> list[tuple[str, SignedCheckpoint]]:
        heads: list[tuple[str, SignedCheckpoint]] = []
        if state_bytes is not None:
            try:
                state = _CheckpointState.model_validate_json(state_bytes)
                heads.append((f"checkpoint {self.checkpoint_path.name}", state.checkpoint))
            except ValidationError as exc:
                problems.add(
                    ProblemKind.INVALID_CHECKPOINT,
                    f"{self.checkpoint_path} is not a checkpoint: {_first_error(exc)}",
                )
        if history_bytes:
            records = history_bytes.split(b"\n")
            if records[-1]:
                warnings.append(f"{self.history_path.name}: torn last record ignored")
            for number, record in enumerate(records[:-1], start=1):
                try:
                    signed = SignedCheckpoint.model_validate_json(record)
                except ValidationError as exc:
                    problems.add(
                        ProblemKind.INVALID_CHECKPOINT,
                        f"{self.history_path.name} record {number} is not a signed checkpoint: "
                        f"{_first_error(exc)}",
                    )
                    continue
                heads.append((f"{self.history_path.name} record {number}", signed))
        unique: dict[tuple[TreeHead, str], tuple[str, SignedCheckpoint]] = {}
        for label, head in heads:
            unique.setdefault((head.tree_head, head.signature), (label, head))
        return list(unique.values())


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class _RawLine:
    offset: int
    data: bytes
    terminated: bool


@dataclass(frozen=True)
class _Torn:
    offset: int
    length: int
    reason: str


@dataclass(frozen=True)
class _Tail:
    """What a writer needs from the end of the log, found without reading the rest."""

    end: int  # just past the last intact line
    next_seq: int
    next_prev: str
    torn: _Torn | None = None
    damaged_before_torn: bool = False


_EMPTY_TAIL = _Tail(end=0, next_seq=0, next_prev=ZERO_HASH)


class _Malformed(ValueError):
    """A line is not an audit entry; the message says why."""


def _entry_fields(data: bytes) -> tuple[int, str]:
    """``(seq, prev)`` of an entry line, cheaply: verification runs this on every line."""
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise _Malformed("not valid JSON") from exc
    if not isinstance(record, dict) or record.keys() != _ENTRY_KEYS:
        raise _Malformed("not an audit entry (expects exactly event, prev, seq, time)")
    seq, prev = record["seq"], record["prev"]
    if type(seq) is not int or seq < 0:
        raise _Malformed("seq is not a non-negative integer")
    if not isinstance(prev, str) or not isinstance(record["time"], str):
        raise _Malformed("prev or time is not a string")
    if not isinstance(record["event"], dict):
        raise _Malformed("event is not an object")
    return seq, prev


def _seq_or_none(data: bytes) -> int | None:
    try:
        return _entry_fields(data)[0]
    except _Malformed:
        return None


def _final_lines(fd: int, end: int, count: int) -> list[_RawLine]:
    """Up to ``count`` last lines of the bytes before ``end``, reading backwards."""
    start, window = end, b""
    while True:
        lines = _split_lines(window, start, whole=start == 0)
        if len(lines) >= count or start == 0:
            return lines[-count:]
        step = min(_TAIL_CHUNK, start)
        start -= step
        window = os.pread(fd, step, start) + window


def _split_lines(window: bytes, base: int, *, whole: bool) -> list[_RawLine]:
    parts = window.split(b"\n")
    lines: list[_RawLine] = []
    offset = base
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        # The first part of a window that does not start the file may be a line's tail.
        if (last and not part) or (index == 0 and not whole):
            offset += len(part) + 1
            continue
        lines.append(_RawLine(offset, part, terminated=not last))
        offset += len(part) + 1
    return lines


def _line_ending_at(fd: int, end: int) -> _RawLine | None:
    """The line whose newline is the byte just before ``end``, if there is one."""
    lines = _final_lines(fd, end, 1)
    if not lines or not lines[0].terminated:
        return None
    return lines[0]


def _scan_tail(fd: int, size: int) -> _Tail:
    lines = _final_lines(fd, size, 2)
    if not lines:
        return _EMPTY_TAIL
    final = lines[-1]
    seq = _seq_or_none(final.data) if final.terminated else None
    if seq is not None:
        return _Tail(end=size, next_seq=seq + 1, next_prev=sha256_hex(final.data))
    reason = "not a valid entry" if final.terminated else "no trailing newline"
    torn = _Torn(offset=final.offset, length=size - final.offset, reason=reason)
    if len(lines) == 1:
        return _Tail(end=final.offset, next_seq=0, next_prev=ZERO_HASH, torn=torn)
    before = lines[0]
    seq = _seq_or_none(before.data)
    if seq is None:
        return _Tail(final.offset, 0, ZERO_HASH, torn=torn, damaged_before_torn=True)
    return _Tail(final.offset, seq + 1, sha256_hex(before.data), torn=torn)


def _two_damaged_lines(path: Path, tail: _Tail) -> str:
    return (
        f"{path}: the last two lines (before byte offset {tail.end} and after) are damaged; "
        f"a crash tears at most one line, so this is tampering or corruption (run verify)"
    )


def _iter_lines(fd: int, start: int, end: int) -> Iterator[_RawLine]:
    """Lines of the bytes ``[start, end)``, in order, read in large chunks."""
    offset = position = start
    pending = b""
    while position < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - position), position)
        if not chunk:
            break
        position += len(chunk)
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for data in complete:
            yield _RawLine(offset, data, terminated=True)
            offset += len(data) + 1
    if pending:
        yield _RawLine(offset, pending, terminated=False)


def _write_durably(fd: int, data: bytes) -> None:
    # One write() per record: with O_APPEND and the lock held, nothing can land in between.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _write_line(fd: int, data: bytes) -> None:
    _write_durably(fd, data + b"\n")


def _write_entry(fd: int, seq: int, prev: str, event: AuditEvent) -> tuple[AuditEntry, int, str]:
    """Write one entry; return it with the ``seq`` and ``prev`` of the entry after it."""
    entry = AuditEntry(seq=seq, time=datetime.now(UTC), prev=prev, event=event)
    line = entry.line()
    _write_line(fd, line)
    return entry, seq + 1, sha256_hex(line)


def _set_aside(path: Path, data: bytes) -> Path:
    """Keep ``data`` in the first free ``<path>.torn-N``, durably, before anything is truncated."""
    number = 0
    while True:
        number += 1
        aside = path.with_name(f"{path.name}.torn-{number}")
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            _write_durably(fd, data)
        finally:
            os.close(fd)
        _fsync_directory(path.parent)
        return aside


def _extend(fd: int, tree: CompactRange, start: int, end: int, prev: str) -> None:
    """Add the entries in ``[start, end)`` to ``tree``, refusing a broken chain."""
    for line in _iter_lines(fd, start, end):
        try:
            seq, line_prev = _entry_fields(line.data)
        except _Malformed as exc:
            where = f"entry {tree.size} (byte {line.offset})"
            raise TamperDetected(f"{where}: {exc}; refusing to sign") from exc
        if seq != tree.size or line_prev != prev:
            where = f"entry {tree.size} (byte {line.offset})"
            raise TamperDetected(f"{where}: breaks the hash chain; refusing to sign")
        tree.append(leaf_hash(line.data))
        prev = sha256_hex(line.data)


# --------------------------------------------------------------------------- verification


class _Problems:
    """Collects the first problem of each kind: later ones usually just echo it."""

    def __init__(self) -> None:
        self._first: dict[ProblemKind, Problem] = {}

    def add(
        self,
        kind: ProblemKind,
        message: str,
        entry: int | None = None,
        offset: int | None = None,
        last_entry: int | None = None,
    ) -> None:
        if last_entry is None:
            last_entry = entry
        problem = Problem(
            kind=kind, message=message, entry=entry, last_entry=last_entry, offset=offset
        )
        self._first.setdefault(kind, problem)

    def in_order(self) -> tuple[Problem, ...]:
        """Earliest first, by the last entry a problem can be at.

        So an exact entry inside a range that a checkpoint flags comes before
        the range, and log-wide problems come last.
        """
        return tuple(
            sorted(
                self._first.values(),
                key=lambda p: (p.entry is None, p.last_entry or 0, p.entry or 0),
            )
        )


@dataclass(frozen=True)
class _Scan:
    count: int
    roots: dict[int, bytes]
    leaves: list[bytes] | None


def _scan_entries(
    fd: int | None, end: int, sizes: set[int], *, keep_leaves: bool, problems: _Problems
) -> _Scan:
    """Check every line's form, sequence and chain; note the Merkle root at each size in ``sizes``.

    Hashing goes on past a bad line so that the checkpoints can still localise
    what changed.
    """
    tree = CompactRange()
    roots = {0: tree.root()}
    leaves: list[bytes] | None = [] if keep_leaves else None
    prev = ZERO_HASH
    lines = _iter_lines(fd, 0, end) if fd is not None else iter(())
    for index, line in enumerate(lines):
        _check_line(index, line, prev, problems)
        leaf = leaf_hash(line.data)
        tree.append(leaf)
        if leaves is not None:
            leaves.append(leaf)
        if tree.size in sizes:
            roots[tree.size] = tree.root()
        prev = sha256_hex(line.data)
    roots[tree.size] = tree.root()
    return _Scan(count=tree.size, roots=roots, leaves=leaves)


def _check_line(index: int, line: _RawLine, prev: str, problems: _Problems) -> None:
    try:
        seq, line_prev = _entry_fields(line.data)
    except _Malformed as exc:
        where = f"entry {index} (byte {line.offset})"
        problems.add(ProblemKind.MALFORMED_ENTRY, f"{where}: {exc}", index, line.offset)
        return
    if seq == index and line_prev == prev:
        return
    where = f"entry {index} (byte {line.offset})"
    if seq != index:
        problems.add(
            ProblemKind.SEQUENCE,
            f"{where}: sequence number {seq}, expected {index} "
            f"(an entry was deleted, inserted, duplicated or moved)",
            index,
            line.offset,
        )
    if line_prev != prev:
        what = "the chain start (64 zeros)" if index == 0 else f"the hash of entry {index - 1}"
        problems.add(
            ProblemKind.CHAIN,
            f"{where}: prev hash mismatch: it is {line_prev[:16]}..., {what} is {prev[:16]}...",
            index,
            line.offset,
        )


def _check_heads(
    heads: list[tuple[str, SignedCheckpoint]],
    trusted: Mapping[str, PublicKey],
    scan: _Scan,
    problems: _Problems,
) -> TreeHead | None:
    """Check each signed head; return the newest that verified and matched the log."""
    matched: list[TreeHead] = []
    mismatched: list[TreeHead] = []
    for label, signed in heads:
        head = signed.tree_head
        if not _signature_ok(label, signed, trusted, problems):
            continue
        if head.tree_size > scan.count:
            problems.add(
                ProblemKind.TRUNCATED,
                f"entry {scan.count}: the log ends after {scan.count} entries but {label} "
                f"covers {head.tree_size}: entries {scan.count}..{head.tree_size - 1} are missing",
                scan.count,
            )
        elif scan.roots[head.tree_size].hex() == head.root_hash:
            matched.append(head)
        else:
            mismatched.append(head)
    if mismatched:
        _localise(matched, mismatched, problems)
    return max(matched, key=lambda head: head.tree_size, default=None)


def _localise(matched: list[TreeHead], mismatched: list[TreeHead], problems: _Problems) -> None:
    """Name the entries between the last head that still matches and the first that does not."""
    first_bad = min(head.tree_size for head in mismatched)
    last_good = max((h.tree_size for h in matched if h.tree_size < first_bad), default=0)
    if first_bad - last_good == 1:
        message = (
            f"entry {last_good}: differs from what the checkpoint of {first_bad} entries signed "
            f"(edited, replaced or re-chained after signing)"
        )
    else:
        message = (
            f"entries {last_good}..{first_bad - 1}: one or more differ from what the checkpoint "
            f"of {first_bad} entries signed (edited, inserted, removed or re-chained after signing)"
        )
    problems.add(ProblemKind.ROOT_MISMATCH, message, entry=last_good, last_entry=first_bad - 1)


def _check_anchor(
    anchor: SignedCheckpoint, trusted: Mapping[str, PublicKey], scan: _Scan, problems: _Problems
) -> None:
    """Prove with an RFC 9162 consistency proof that the log extends an exported checkpoint."""
    if not _signature_ok("the anchored checkpoint", anchor, trusted, problems):
        return
    head = anchor.tree_head
    if head.tree_size > scan.count:
        problems.add(
            ProblemKind.INCONSISTENT_WITH_ANCHOR,
            f"entry {scan.count}: the log ends after {scan.count} entries but the anchored "
            f"checkpoint covers {head.tree_size}: the log was truncated or rolled back",
            scan.count,
        )
        return
    assert scan.leaves is not None
    proof = consistency_proof(scan.leaves, head.tree_size)
    old_root = bytes.fromhex(head.root_hash)
    if not verify_consistency(head.tree_size, scan.count, old_root, scan.roots[scan.count], proof):
        problems.add(
            ProblemKind.INCONSISTENT_WITH_ANCHOR,
            f"entries 0..{head.tree_size - 1}: the log is not an extension of the anchored "
            f"checkpoint of {head.tree_size} entries (consistency proof fails)",
            entry=0,
            last_entry=head.tree_size - 1,
        )


def _signature_ok(
    label: str, signed: SignedCheckpoint, trusted: Mapping[str, PublicKey], problems: _Problems
) -> bool:
    status = signed.signature_status(trusted)
    fingerprint = signed.tree_head.key_fingerprint
    if status is SignatureStatus.UNKNOWN_KEY:
        problems.add(
            ProblemKind.UNKNOWN_KEY,
            f"{label} is signed by key {fingerprint[:16]}..., which is not trusted",
        )
    elif status is SignatureStatus.BAD_SIGNATURE:
        problems.add(
            ProblemKind.BAD_SIGNATURE,
            f"{label}: the signature does not verify under trusted key {fingerprint[:16]}...",
        )
    return status is SignatureStatus.VALID


# --------------------------------------------------------------------------- helpers


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
            f"{target} is not a signed checkpoint: {_first_error(exc)}"
        ) from exc


def format_timeline(entries: Iterable[AuditEntry]) -> str:
    """A plain-text table of entries for reviewers: one row per event, oldest first."""
    header = ("#", "time (UTC)", "kind", "stage", "command", "actor", "note")
    rows = [header, *(_timeline_row(entry) for entry in entries)]
    # The last column (the note) is free width, so it is not padded.
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [row[column].ljust(width) for column, width in enumerate(widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _timeline_row(entry: AuditEntry) -> tuple[str, ...]:
    event = entry.event
    if event.error:
        note = "error: " + " ".join(event.error.split())  # one row per event, always
    else:
        parts = (
            [f"{len(event.inputs)} in", f"{len(event.outputs)} out"]
            if (event.inputs or event.outputs)
            else []
        )
        parts += [f"{key}={_short(value)}" for key, value in sorted(event.details.items())]
        note = ", ".join(parts)
    return (
        str(entry.seq),
        entry.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        event.kind.value,
        event.stage or "-",
        event.command,
        event.actor,
        note,
    )


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_map(keys: Iterable[PublicKey]) -> dict[str, PublicKey]:
    return {key.fingerprint: key for key in keys}


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _open_or_empty(path: Path) -> Iterator[int | None]:
    """A read descriptor for ``path``, or None when it does not exist (an empty log)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
