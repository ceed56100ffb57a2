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
    Bytes of a torn last line, set aside (mode 0600) by the writer that found them.

All of these are store files (:mod:`stores.files`): opened without following
links, and refused unless they are regular files owned by the user.

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
The log's lines live in the shared record store (:mod:`stores.local`): each
append holds an exclusive file lock (``flock``), reads only the tail, writes
with one ``O_APPEND`` write, and ``fsync``s before returning: an entry that
:meth:`AuditLog.append` returned survives a crash, and writers in several
processes neither interleave nor lose entries. A crash mid-write can leave at
most the last line torn (no newline, or not valid JSON). Verification reports
it as :attr:`ProblemKind.TORN_TAIL` with its byte offset and entry number,
distinct from tampering; the next writer follows the store's one torn-tail
rule: it copies the torn bytes to ``log.torn-N``, truncates them and appends a
``recovery`` event recording their offset, length and SHA-256 before its own
event. Torn bytes inside the range a checkpoint covers cannot come from a
crash, so the writer refuses to touch them.

In a shared PostgreSQL store
----------------------------
With a store configured for the project's evidence directory (:mod:`stores.select`,
``custodian store use``), the log, the checkpoint and its history are three record
streams in the server instead (``audit-log``, ``audit-checkpoint`` holding every
checkpoint state in order, the newest current, and ``audit-checkpoint-history``):
the same line bytes, the same chain, heads and signatures, checked by the same code,
so every clone pointed at the store reads, verifies and extends one log. A writer
holds the log stream's transaction-level advisory lock where it would hold the file
lock; a transaction never tears, so there is no torn tail to set aside; the server
refuses UPDATE, DELETE and TRUNCATE of any row, so nothing can be renamed aside
either, and :meth:`AuditLog.adopt` is refused there. A DBA who bypasses the
triggers and rewrites rows is caught by the chain and the signed roots as a local
editor would be.

Modules
-------
:mod:`~audits.log.records` (events, entries, tree heads, reports),
:mod:`~audits.log.audit_log` (appending, checkpoints, reading),
:mod:`~audits.log.verification`, :mod:`~audits.log.timeline`, and
:mod:`~audits.log.spends` (privacy spends in the log, and the cross-check with
the privacy ledger's records).

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
checkpoint files (or the whole log). Writers do not start a new signed tree
over existing entries, nor over an empty log while a checkpoint committed
elsewhere names a non-empty one (:meth:`AuditLog.open_tree`,
:class:`NewTreeRefused`); only :meth:`AuditLog.adopt`, a person's logged
decision, does. A rollback is not detectable from the log alone: what catches
it is a signed head kept outside the attacker's reach. Every sign-off carries
one, committed with it (:mod:`audits.witness`); a checkpoint can also be
exported (:meth:`AuditLog.export_checkpoint`) to a release attachment, a
ticket, another repository. ``verify(against=...)`` then proves with an RFC
9162 consistency proof that the log still extends it, and a rolled-back,
truncated, deleted or rewritten log fails.

*Someone who holds the signing key* can sign any log: locally, a rewritten and
re-signed log verifies. Exported anchors still catch any rewrite of what they
cover; they cannot catch forged entries appended after the newest anchor. The
key's file mode and its home outside the project (:mod:`audits.keys`) are the
protection; after a compromise, make a new key, trust it, and keep verifying
against anchors exported before the compromise.

Times are the writer's clock and prove nothing on their own.
"""

from __future__ import annotations

from audits.log.audit_log import AuditLog, load_checkpoint
from audits.log.errors import (
    CheckpointFormatError,
    LogFormatError,
    NewTreeRefused,
    NoCheckpoint,
    NoTrustedKeys,
    TamperDetected,
    UntrustedCheckpoint,
)
from audits.log.records import (
    CHECKPOINT_FORMAT,
    ZERO_HASH,
    AuditEntry,
    AuditEvent,
    EventKind,
    GitCommit,
    Problem,
    ProblemKind,
    Sha256Hex,
    SignatureStatus,
    SignedCheckpoint,
    TornTail,
    TreeHead,
    VerifyReport,
)
from audits.log.timeline import format_timeline

__all__ = [
    "CHECKPOINT_FORMAT",
    "ZERO_HASH",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "CheckpointFormatError",
    "EventKind",
    "GitCommit",
    "LogFormatError",
    "NewTreeRefused",
    "NoCheckpoint",
    "NoTrustedKeys",
    "Problem",
    "ProblemKind",
    "Sha256Hex",
    "SignatureStatus",
    "SignedCheckpoint",
    "TamperDetected",
    "TornTail",
    "TreeHead",
    "UntrustedCheckpoint",
    "VerifyReport",
    "format_timeline",
    "load_checkpoint",
]
