"""The audit log's records: events, entries, signed tree heads, and verification reports."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

import orjson
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

from audits.canonical import NotCanonicalizable, canonical_bytes
from audits.keys import PublicKey

ZERO_HASH = "0" * 64
# RFC 8785 prints integers below 2**53 as their digits; from there on canonical_bytes refuses.
_SAFE_INTEGERS_END = 2**53
CHECKPOINT_FORMAT = "custodian-audit-checkpoint/v1"

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
GitCommit = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})$")]


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
        return utc_text(value)

    def line(self) -> bytes:
        """Canonical JSON of the entry, without the trailing newline: the bytes hashed.

        Assembled around the event's canonical bytes (not cached on the event: a
        ``model_copy(update=...)`` would carry a stale copy): canonical JSON sorts the keys
        (event, prev, seq, time), and the other three values need no escaping
        (a hex hash, digits, the UTC text), so this is byte for byte
        ``canonical_bytes(self.model_dump(mode="json"))`` at a fraction of the cost.
        """
        if self.seq >= _SAFE_INTEGERS_END:
            return canonical_bytes(self.model_dump(mode="json"))  # refuses, naming why
        return b"".join(
            (
                b'{"event":',
                # model_dump(mode="json") without its Python wrapper (every append pays it)
                event_bytes(self.event.__pydantic_serializer__.to_python(self.event, mode="json")),
                b',"prev":"',
                self.prev.encode("ascii"),
                b'","seq":',
                str(self.seq).encode("ascii"),
                b',"time":"',
                utc_text(self.time).encode("ascii"),
                b'"}',
            )
        )


def event_bytes(value: JsonValue) -> bytes:
    """``canonical_bytes(value)``, through ``orjson`` (compiled) where that gives the same bytes.

    It does for strings, integers JSON holds exactly, booleans, null, lists, and
    objects with ASCII keys (code point and UTF-16 order agree), and for floats
    that both print in plain decimal notation and are not whole (orjson writes
    ``3.0``, ECMAScript ``3``); all three print the shortest digits that round-trip,
    and orjson escapes strings as ECMAScript does. Anything else, or a string that
    is not valid Unicode (orjson refuses it), goes to ``canonical_bytes``; a test
    holds the two to the ``rfc8785`` package on generated values.
    """
    if _plain_json(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return canonical_bytes(value)


# Values that need no further look: most of an event's are strings or null.
_PLAIN_SCALARS = (str, bool, type(None))


def _plain_json(value: object) -> bool:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                return False
            if type(item) not in _PLAIN_SCALARS and not _plain_json(item):
                return False
        return True
    if kind is list:
        return all(_plain_json(item) for item in value)
    if kind is int:
        return -_SAFE_INTEGERS_END < value < _SAFE_INTEGERS_END
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    return False


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


class CheckpointState(BaseModel):
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


def utc_text(value: datetime) -> str:
    """The log's time format: UTC with microseconds and a ``Z``."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime pads such years as the platform does: kept as it was
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # strftime's bytes for every other year, at half its cost (every entry is stamped)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


def first_error(exc: ValidationError) -> str:
    """The first validation error as ``field.path: message``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
