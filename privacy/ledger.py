"""The lifetime privacy budget ledger, kept per data-subject population.

Every DP training run that touches a dataset (the SHA-256 of its training data, and the
population of people it is about, ``Provenance.population``) records its accountant
history here *before* it takes the steps: the trainer reserves
steps up to ``s + k`` with :meth:`LedgerRun.record_steps`, which returns only once the
line is on disk (``fsync``), and only then executes them. A crash can therefore only
over-count, never under-count. The spend of a population is the accountant's composition
of the latest reservation of every run on any dataset of that population
(:func:`privacy.accounting.epsilon_of`), never a sum of epsilons: a new version of a
dataset, or another dataset about the same people, draws on the same lifetime budget.

Budget keys and migration
    A run record names its ``population`` (absent for a dataset that declares none: such
    a run is charged to its dataset alone, as before populations existed). Records
    written before populations existed carry only ``dataset_sha256``; they migrate by
    rule, without rewriting the chained file: a legacy run counts towards population P
    when its dataset is one that a run of P names, or the dataset of the run asking.
    So the first population-keyed run on an old dataset inherits everything spent on it.

File format
    An append-only JSON-lines file that lives outside DVC outputs (DVC deletes outputs
    before re-running a stage), e.g. ``.custodian/privacy-ledger.jsonl``. Each line is one
    canonical JSON record (sorted keys, no spaces, ASCII) with a sequence number ``seq``
    and ``prev``, the SHA-256 of the previous line's bytes (64 zeros for the first line).
    ``event`` is ``open`` (a run starts or resumes, under a fresh ``session``), ``steps``
    (a reservation: the run's cumulative step count) or ``recovery`` (see below). The file
    is a record file of the shared store (:mod:`stores.local`): writers and readers hold
    ``<path>.lock`` (``flock``), so concurrent processes never interleave or lose lines;
    each append is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``; the
    file is never opened through a link and must be a regular file the user owns.

A team's shared store
    With ``.custodian/store.toml`` (``custodian store use postgresql://...``) the same
    records, byte for byte, are the rows of the PostgreSQL stream ``privacy-ledger``
    (:mod:`stores.postgres`), shared by every clone configured with the same project. Each
    read-check-append below is then one transaction holding the stream's advisory lock, so
    trainers on different machines cannot jointly overspend either; a reservation is
    durable when its commit returns. The server refuses UPDATE, DELETE and TRUNCATE, and
    the chain is still verified on every read.

Budget
    :meth:`PrivacyLedger.check_budget` refuses a run before it starts. A run opened with
    ``lifetime_epsilon`` also checks every reservation against the lifetime budget under
    the lock, so runs started concurrently on the same data cannot jointly overspend.
    Every operation re-reads and re-verifies the whole file under the lock: cost grows
    with the file, so reserve steps in blocks (e.g. every few dozen steps), not one by one.

Torn lines
    A crash (power loss, full disk) can leave the last line torn. Readers report it
    precisely (:class:`TornTail`: offset, length, SHA-256) and ignore it. Ignoring it never
    under-counts: ``record_steps`` returns only after its whole line, newline included, is
    written and synced, so a line that did not make it intact (even a complete record
    without its newline) was never acknowledged and its steps were never taken; every step
    taken is covered by an earlier intact reservation. The next writer follows the store's
    one torn-tail rule: it moves the bytes to ``<path>.torn-N`` (mode 0600), truncates them
    and appends a ``recovery`` record naming their offset (where the recovery record itself
    now starts), length and SHA-256. Ledgers written before this rule kept torn bytes in
    place, newline-terminated, with the recovery record right after them; those still
    verify: such a record must account for exactly the unreadable bytes before it.

Protection, and its limits
    The hash chain detects editing, inserting, reordering or deleting any line that is
    followed by another record: :meth:`PrivacyLedger.verify` names the first bad line, and
    every writer refuses to append to a ledger that fails verification (fail closed).
    Unreadable bytes in the middle are accepted only where a ``recovery`` record accounts
    for them exactly (the old in-place rule). The chain carries no key, though: whoever
    can write the file can drop its last lines, or rewrite the whole file with a fresh
    chain, and deleting the file silently loses the history and resets every dataset's
    spend to zero. That is why the chain head (:attr:`LedgerStatus.head`) is to be bound
    into the signed audit log, which makes truncation, rewriting and deletion detectable
    there; until then the ledger is only tamper-*evident* for edits in the middle, and its
    loss is not detected.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from privacy.accounting import AccountantKind, SgdSteps, check_delta, epsilon_of
from privacy.errors import BudgetExceeded, PrivacyError, PrivacyInputError
from stores.errors import DamagedTail, StoreError, StoreUnavailable, UnsafeStoreFile
from stores.local import Link, RecordBuilder, SetAside, StoreLocked, sha256_hex
from stores.select import open_stream
from stores.stream import RecordStream, Snapshot, StreamSession

__all__ = [
    "BudgetCheck",
    "DatasetSpend",
    "LedgerCorrupted",
    "LedgerRun",
    "LedgerStatus",
    "LedgerUnavailable",
    "PrivacyLedger",
    "RunSpend",
    "TornTail",
    "read_link",
]

FORMAT_VERSION = 1
GENESIS = "0" * 64
LOCK_TIMEOUT_S = 60.0
_SHORT_HASH = 12

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Printable ASCII without spaces: run ids appear in one-line messages and file names.
_RUN_ID = re.compile(r"[!-~]{1,200}")
Sha256Hex = Annotated[str, Field(pattern=f"^{_SHA256.pattern}$")]
RunId = Annotated[str, Field(pattern=f"^{_RUN_ID.pattern}$")]
_POPULATION = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
Population = Annotated[str, Field(pattern=f"^{_POPULATION.pattern}$")]


class LedgerCorrupted(PrivacyError):
    """The ledger fails verification: a line was edited, deleted, inserted or reordered."""


class LedgerUnavailable(PrivacyInputError):
    """The ledger's store (a database server) went away: the operation was not confirmed.

    Exit 2. A reservation whose commit was cut off may still have been recorded; the
    caller takes none of its steps, so the ledger can only over-count. Retrying with the
    same run (:meth:`LedgerRun.record_steps`) never records the steps twice.
    """


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    v: Literal[1]
    seq: Annotated[int, Field(ge=0)]
    prev: Sha256Hex
    time: str


class RunRecord(_Record):
    """A run opened (``open``) or reserved steps up to a cumulative count (``steps``)."""

    event: Literal["open", "steps"]
    dataset_sha256: Sha256Hex
    run_id: RunId
    session: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    accountant: AccountantKind
    delta: Annotated[float, Field(gt=0, lt=1)]
    noise_multiplier: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    sample_rate: Annotated[float, Field(gt=0, le=1)]
    steps: Annotated[int, Field(ge=0)]
    # Absent on records written before populations existed (see "Budget keys").
    population: Population | None = None


class TornBytes(BaseModel):
    """Unreadable bytes found in the file, identified exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    offset: Annotated[int, Field(ge=0)]
    length: Annotated[int, Field(ge=1)]
    sha256: Sha256Hex


class RecoveryRecord(_Record):
    """A writer found the unreadable bytes ``torn`` after the previous record."""

    event: Literal["recovery"]
    torn: TornBytes


_RECORD = TypeAdapter(Annotated[RunRecord | RecoveryRecord, Field(discriminator="event")])


@dataclass(frozen=True, slots=True)
class TornTail:
    """Unreadable bytes at the end of the ledger, left by a crash mid-write."""

    offset: int
    length: int
    sha256: str
    line: int  # 1-based line number where the torn bytes start

    def describe(self) -> str:
        """One line naming where the torn bytes are."""
        return (
            f"torn tail: {self.length} unreadable bytes at offset {self.offset} "
            f"(line {self.line}, sha256 {self.sha256[:_SHORT_HASH]}); "
            "ignored, the next writer records a recovery"
        )


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    """Result of a successful :meth:`PrivacyLedger.verify`."""

    path: str
    records: int
    head: str  # SHA-256 of the last record's line: the value to anchor in the audit log
    recoveries: int
    torn_tail: TornTail | None


@dataclass(frozen=True, slots=True)
class RunSpend:
    """One run's latest reservation."""

    run_id: str
    dataset_sha256: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    delta: float
    opened: str
    updated: str


@dataclass(frozen=True, slots=True)
class DatasetSpend:
    """Everything spent on one population (or, without one, one dataset), composed at
    ``delta`` by ``accountant``. ``dataset_sha256`` is the newest run's dataset."""

    dataset_sha256: str
    population: str | None
    datasets: tuple[str, ...]
    runs: tuple[RunSpend, ...]
    steps: int
    spent_epsilon: float
    delta: float
    accountant: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready dict (for ``custodian privacy ledger --json``)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """The numbers behind a passed budget check."""

    dataset_sha256: str
    population: str | None
    spent_epsilon: float
    planned_epsilon: float
    total_epsilon: float
    lifetime_epsilon: float
    delta: float
    accountant: str


@dataclass(frozen=True, slots=True)
class _State:
    """What a full, verified read of the file establishes."""

    records: tuple[RunRecord | RecoveryRecord, ...]
    head: str
    torn_tail: TornTail | None

    def runs(self) -> dict[str, list[RunRecord]]:
        by_run: dict[str, list[RunRecord]] = {}
        for record in self.records:
            if isinstance(record, RunRecord):
                by_run.setdefault(record.run_id, []).append(record)
        return by_run

    def charged(
        self, dataset_sha256: str, population: str | None, skip: str | None = None
    ) -> list[RunRecord]:
        """The latest record of every run charged to the budget the caller's run uses
        (except run ``skip``): its population's, or without one its dataset's."""
        latest = [entries[-1] for run_id, entries in self.runs().items() if run_id != skip]
        if population is None:
            return [
                r for r in latest if r.population is None and r.dataset_sha256 == dataset_sha256
            ]
        members = {dataset_sha256} | {
            r.dataset_sha256 for r in latest if r.population == population
        }
        return [
            r
            for r in latest
            if r.population == population or (r.population is None and r.dataset_sha256 in members)
        ]

    def history(self, dataset_sha256: str, population: str | None = None) -> list[SgdSteps]:
        return [
            SgdSteps(r.noise_multiplier, r.sample_rate, r.steps)
            for r in self.charged(dataset_sha256, population)
        ]


def _canonical(record: RunRecord | RecoveryRecord) -> bytes:
    # exclude_none: records without a population stay byte-identical to the lines
    # written before the field existed, so old ledgers keep verifying.
    return json.dumps(
        record.model_dump(mode="json", exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _parse_line(line: bytes) -> RunRecord | RecoveryRecord | None:
    """The record on ``line``, or None if it is not one, byte for byte in canonical form."""
    try:
        record = _RECORD.validate_json(line)
    except ValidationError:
        return None
    return record if _canonical(record) == line else None


def _segments(raw: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, bytes without newline) for each line."""
    offset = 0
    number = 1
    while offset < len(raw):
        end = raw.find(b"\n", offset)
        end = len(raw) if end == -1 else end
        yield number, offset, raw[offset:end]
        offset = end + 1
        number += 1


def _check_claim(raw: bytes, record: RecoveryRecord, start: int, offset: int, line: int) -> None:
    """A recovery record at ``offset`` must describe exactly the bytes from ``start``."""
    torn = record.torn
    region = raw[torn.offset : torn.offset + torn.length]
    gap = torn.length + (0 if region.endswith(b"\n") else 1)
    if torn.offset != start or start + gap != offset or sha256_hex(region) != torn.sha256:
        raise LedgerCorrupted(
            f"line {line}: recovery record does not match the unreadable bytes "
            f"{start}..{offset} before it"
        )


def _check_chain(
    record: RunRecord | RecoveryRecord, seq: int, prev: str, line: int, prev_line: int
) -> None:
    if record.seq != seq:
        raise LedgerCorrupted(
            f"line {line}: sequence number {record.seq}, expected {seq} "
            "(a record was deleted, inserted or reordered)"
        )
    if record.prev != prev:
        raise LedgerCorrupted(
            f"line {line}: prev hash does not match the record on line {prev_line} "
            f"(line {prev_line} was edited)"
        )


def _check_run(record: RunRecord, earlier: RunRecord | None, line: int) -> None:
    """A run keeps its dataset, population and noise parameters, and its step count never
    drops."""
    if earlier is None:
        return
    if _identity(earlier) != _identity(record) or record.steps < earlier.steps:
        raise LedgerCorrupted(
            f"line {line}: run {record.run_id!r} changes its dataset, population, noise "
            "multiplier or sample rate, or its step count went down"
        )


def _identity(record: RunRecord) -> tuple[str, str | None, float, float]:
    return (record.dataset_sha256, record.population, record.noise_multiplier, record.sample_rate)


def _link(line: bytes) -> Link | None:
    """The store's view of a line: its chain fields, or None if it is not a record."""
    record = _parse_line(line)
    return None if record is None else Link(record.seq, record.prev)


# For copying the ledger between stores (stores.transfer.copy_stream).
read_link = _link


def _read_state(raw: bytes, torn: TornTail | None) -> _State:
    """Parse and verify the ledger's intact bytes; raise LedgerCorrupted on the first bad line."""
    records: list[RunRecord | RecoveryRecord] = []
    latest: dict[str, RunRecord] = {}
    head = GENESIS
    head_line = 0
    unreadable_from: int | None = None  # offset where unclaimed unreadable bytes begin
    unreadable_line = 0
    for line, offset, data in _segments(raw):
        record = _parse_line(data)
        if record is None:
            if unreadable_from is None:
                unreadable_from, unreadable_line = offset, line
            continue
        if isinstance(record, RunRecord) and unreadable_from is not None:
            raise LedgerCorrupted(
                f"line {unreadable_line}: not a ledger record, and no recovery record "
                "accounts for it (the line was edited or damaged)"
            )
        _check_chain(record, len(records), head, line, head_line)
        if isinstance(record, RecoveryRecord):
            _check_recovery(raw, record, unreadable_from, offset, line)
            unreadable_from = None
        else:
            _check_run(record, latest.get(record.run_id), line)
            latest[record.run_id] = record
        records.append(record)
        head, head_line = sha256_hex(data), line
    return _State(tuple(records), head, torn)


def _check_recovery(
    raw: bytes, record: RecoveryRecord, unreadable_from: int | None, offset: int, line: int
) -> None:
    """A recovery record names bytes set aside from where it starts, or (a ledger written
    before the store's rule) exactly the unreadable bytes left in place before it."""
    if unreadable_from is not None:
        _check_claim(raw, record, unreadable_from, offset, line)
    elif record.torn.offset != offset:
        raise LedgerCorrupted(
            f"line {line}: recovery record claims bytes at offset {record.torn.offset}, "
            f"but the torn bytes it set aside were cut where it starts ({offset})"
        )


def _recovery(aside: SetAside) -> RecordBuilder:
    claim = TornBytes(offset=aside.offset, length=aside.length, sha256=aside.sha256)
    return _builder({"event": "recovery", "torn": claim})


def _builder(fields: dict[str, Any]) -> RecordBuilder:
    def build(seq: int, prev: str) -> bytes:
        record = _RECORD.validate_python(
            {"v": FORMAT_VERSION, "seq": seq, "prev": prev, "time": _now(), **fields},
            strict=False,
        )
        return _canonical(record)

    return build


def _check_dataset(dataset_sha256: str) -> None:
    # A malformed hash would match no run and so pass every budget check.
    if not isinstance(dataset_sha256, str) or not _SHA256.fullmatch(dataset_sha256):
        raise PrivacyInputError(
            f"dataset_sha256 must be 64 lowercase hex digits, got {dataset_sha256!r}"
        )


def _check_population(population: str | None) -> None:
    # A malformed name would match no run and so pass every budget check.
    if population is not None and (
        not isinstance(population, str) or not _POPULATION.fullmatch(population)
    ):
        raise PrivacyInputError(
            f"population must be lowercase letters, digits and . _ - (at most 64), "
            f"got {population!r}"
        )


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise PrivacyInputError(
            f"run_id must be 1-200 printable ASCII characters without spaces, got {run_id!r}"
        )


def _check_lifetime(lifetime_epsilon: float) -> None:
    if (
        not isinstance(lifetime_epsilon, int | float)
        or isinstance(lifetime_epsilon, bool)
        or not 0 < lifetime_epsilon < float("inf")
    ):
        raise PrivacyInputError(f"lifetime_epsilon must be > 0, got {lifetime_epsilon!r}")


def _fmt(epsilon: float) -> str:
    return f"{epsilon:.4g}"


class PrivacyLedger:
    """The ledger file at ``path`` (created on first write; nothing happens on construction)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._opened: RecordStream | None = None
        self._session: StreamSession | None = None

    @property
    def store(self) -> RecordStream:
        """The record stream holding the ledger: the file at :attr:`path`, or the team's
        PostgreSQL store when ``store.toml`` beside it names one (:mod:`stores.select`)."""
        if self._opened is None:
            try:
                self._opened = open_stream(self.path, _link, lock_timeout=LOCK_TIMEOUT_S)
            except StoreError as err:
                raise PrivacyInputError(f"privacy ledger store: {err}") from None
        return self._opened

    @contextmanager
    def _locked(self) -> Iterator[_State]:
        """Hold the stream for one read-decide-append: a file lock, or one transaction."""
        try:
            with self.store.session() as session:
                self._session = session
                try:
                    yield self._state(session)
                finally:
                    self._session = None
        except StoreLocked as err:
            raise PrivacyError(f"privacy ledger {err}") from None
        except DamagedTail as err:
            raise LedgerCorrupted(str(err)) from None
        except StoreUnavailable as err:
            raise LedgerUnavailable(
                f"privacy ledger unavailable, reservation not confirmed (take no steps): {err}"
            ) from None
        except UnsafeStoreFile:
            raise  # a planted link or foreign file: the shell's usage error, as before
        except StoreError as err:
            raise PrivacyError(f"privacy ledger {err}") from None

    def _state(self, session: StreamSession) -> _State:
        try:
            snapshot: Snapshot = session.snapshot()
        except OSError as err:
            raise PrivacyError(f"cannot read privacy ledger {self.path}: {err.strerror}") from err
        torn = None
        if snapshot.torn is not None:
            line = snapshot.raw.count(b"\n") + 1
            cut = snapshot.torn
            torn = TornTail(cut.offset, cut.length, cut.sha256, line)
        try:
            return _read_state(snapshot.raw, torn)
        except LedgerCorrupted as err:
            raise LedgerCorrupted(f"{self.store.label}: {err}") from None

    def _append(self, fields: dict[str, Any]) -> None:
        """Append the record ``fields``, after a recovery record if the tail is torn.

        The caller holds :meth:`_locked` and has verified the records. A local store sets
        torn bytes aside first, then writes everything in one write, so a crash here
        leaves at worst a new torn tail; a server store commits when :meth:`_locked` ends.
        """
        assert self._session is not None, "append outside _locked"
        try:
            self._session.append([_builder(fields)], recovery=_recovery)
        except OSError as err:
            raise PrivacyError(f"cannot write privacy ledger {self.path}: {err.strerror}") from err

    def verify(self) -> LedgerStatus:
        """Check the whole chain; raise LedgerCorrupted naming the first bad line."""
        with self._locked() as state:
            return LedgerStatus(
                path=str(self.path),
                records=len(state.records),
                head=state.head,
                recoveries=sum(isinstance(r, RecoveryRecord) for r in state.records),
                torn_tail=state.torn_tail,
            )

    def history(self, dataset_sha256: str, population: str | None = None) -> list[SgdSteps]:
        """The latest reservation of every run charged to the dataset's budget (its
        population's when it names one), as accountant history."""
        _check_dataset(dataset_sha256)
        _check_population(population)
        with self._locked() as state:
            return state.history(dataset_sha256, population)

    def spent(
        self,
        dataset_sha256: str,
        delta: float,
        kind: AccountantKind = AccountantKind.PRV,
        population: str | None = None,
    ) -> float:
        """Epsilon spent on the dataset's budget: all its runs composed by one accountant."""
        return epsilon_of(self.history(dataset_sha256, population), delta, kind)

    def check_budget(
        self,
        dataset_sha256: str,
        planned: SgdSteps,
        lifetime_epsilon: float,
        delta: float,
        kind: AccountantKind = AccountantKind.PRV,
        population: str | None = None,
    ) -> BudgetCheck:
        """Raise BudgetExceeded if spent and ``planned`` composed would exceed the lifetime.

        Call before a run starts; ``planned`` is the steps still to take (for a resumed
        run, those after its recorded steps).
        """
        _check_lifetime(lifetime_epsilon)
        kind = AccountantKind.parse(kind)
        history = self.history(dataset_sha256, population)
        total = _enforce_budget(
            _budget_name(dataset_sha256, population),
            history,
            planned,
            lifetime_epsilon,
            delta,
            kind,
        )
        return BudgetCheck(
            dataset_sha256=dataset_sha256,
            population=population,
            spent_epsilon=epsilon_of(history, delta, kind),
            planned_epsilon=epsilon_of([planned], delta, kind),
            total_epsilon=total,
            lifetime_epsilon=lifetime_epsilon,
            delta=delta,
            accountant=kind.value,
        )

    def open_run(
        self,
        dataset_sha256: str,
        run_id: str,
        noise_multiplier: float,
        sample_rate: float,
        kind: AccountantKind,
        delta: float,
        lifetime_epsilon: float | None = None,
        population: str | None = None,
    ) -> LedgerRun:
        """Start run ``run_id``, or resume it from its recorded steps if it exists.

        With ``lifetime_epsilon``, every reservation is checked against the dataset's
        lifetime budget under the ledger lock, so concurrent runs cannot jointly overspend.
        Opening a run supersedes any earlier handle on the same run id.
        """
        _check_dataset(dataset_sha256)
        _check_population(population)
        _check_run_id(run_id)
        check_delta(delta)
        if lifetime_epsilon is not None:
            _check_lifetime(lifetime_epsilon)
        kind = AccountantKind.parse(kind)
        params = SgdSteps(noise_multiplier, sample_rate, 0)
        fields = {
            "event": "open",
            "dataset_sha256": dataset_sha256,
            "run_id": run_id,
            "session": secrets.token_hex(16),
            "accountant": kind.value,
            "delta": float(delta),
            "noise_multiplier": float(params.noise_multiplier),
            "sample_rate": float(params.sample_rate),
            "population": population,
        }
        with self._locked() as state:
            earlier = state.runs().get(run_id)
            steps = earlier[-1].steps if earlier else 0
            if earlier:
                _check_resume(earlier[-1], fields)
            self._append({**fields, "steps": steps})
        return LedgerRun(self, fields, steps, lifetime_epsilon)

    def summary(
        self, delta: float | None = None, kind: AccountantKind | None = None
    ) -> tuple[DatasetSpend, ...]:
        """Spend per population (datasets without one: per dataset), sorted by name.

        By default each budget is composed at the smallest delta any of its runs used (the
        most conservative) with the accountant of its latest run. Legacy runs migrate to a
        population as ``charged`` rules.
        """
        with self._locked() as state:
            by_run = state.runs()
        population_of = {
            entries[-1].dataset_sha256: entries[-1].population
            for entries in by_run.values()
            if entries[-1].population is not None
        }
        budgets: dict[tuple[str, str], list[list[RunRecord]]] = {}
        for entries in by_run.values():
            latest = entries[-1]
            population = latest.population or population_of.get(latest.dataset_sha256)
            key = ("population", population) if population else ("dataset", latest.dataset_sha256)
            budgets.setdefault(key, []).append(entries)
        return tuple(
            _dataset_spend(name if kind_ == "population" else None, runs, delta, kind)
            for (kind_, name), runs in sorted(budgets.items())
        )


def _check_resume(latest: RunRecord, fields: dict[str, Any]) -> None:
    asked = (
        fields["dataset_sha256"],
        fields["population"],
        fields["noise_multiplier"],
        fields["sample_rate"],
    )
    if _identity(latest) != asked:
        raise PrivacyInputError(
            f"run {latest.run_id!r} exists with dataset {latest.dataset_sha256[:_SHORT_HASH]}, "
            f"population {latest.population}, noise multiplier {latest.noise_multiplier:g} "
            f"and sample rate {latest.sample_rate:g}; resume it with the same values or use a "
            "new run id"
        )


def _budget_name(dataset_sha256: str, population: str | None) -> str:
    """How a refusal names the budget: the population, else the dataset."""
    if population is not None:
        return f"population {population!r}"
    return f"dataset {dataset_sha256[:_SHORT_HASH]}"


def _enforce_budget(
    budget: str,
    history: list[SgdSteps],
    planned: SgdSteps,
    lifetime_epsilon: float,
    delta: float,
    kind: AccountantKind,
) -> float:
    """The composed epsilon of ``history`` and ``planned``; BudgetExceeded if over lifetime."""
    total = epsilon_of([*history, planned], delta, kind)
    if total > lifetime_epsilon:
        spent = epsilon_of(history, delta, kind)
        planned_alone = epsilon_of([planned], delta, kind)
        raise BudgetExceeded(
            f"privacy budget exceeded for {budget}: "
            f"spent epsilon {_fmt(spent)} + planned {_fmt(planned_alone)} (alone) "
            f"composes to {_fmt(total)} > lifetime {_fmt(lifetime_epsilon)} "
            f"(delta {delta:g}, {AccountantKind.parse(kind)} accountant)"
        )
    return total


def _dataset_spend(
    population: str | None,
    runs: list[list[RunRecord]],
    delta: float | None,
    kind: AccountantKind | None,
) -> DatasetSpend:
    latest = [entries[-1] for entries in runs]
    delta = min(run.delta for run in latest) if delta is None else delta
    newest = max(latest, key=lambda run: run.seq)
    kind = newest.accountant if kind is None else AccountantKind.parse(kind)
    history = [SgdSteps(r.noise_multiplier, r.sample_rate, r.steps) for r in latest]
    spends = tuple(
        RunSpend(
            run_id=entries[-1].run_id,
            dataset_sha256=entries[-1].dataset_sha256,
            noise_multiplier=entries[-1].noise_multiplier,
            sample_rate=entries[-1].sample_rate,
            steps=entries[-1].steps,
            accountant=entries[-1].accountant.value,
            delta=entries[-1].delta,
            opened=entries[0].time,
            updated=entries[-1].time,
        )
        for entries in runs
    )
    return DatasetSpend(
        dataset_sha256=newest.dataset_sha256,
        population=population,
        datasets=tuple(sorted({run.dataset_sha256 for run in latest})),
        runs=spends,
        steps=sum(run.steps for run in latest),
        spent_epsilon=epsilon_of(history, delta, kind),
        delta=delta,
        accountant=kind.value,
    )


class LedgerRun:
    """A handle to one open run: reserve steps before taking them."""

    def __init__(
        self,
        ledger: PrivacyLedger,
        fields: dict[str, Any],
        steps: int,
        lifetime_epsilon: float | None,
    ) -> None:
        self._ledger = ledger
        self._fields = fields
        self._steps = steps
        self._lifetime_epsilon = lifetime_epsilon

    @property
    def run_id(self) -> str:
        """The run's id."""
        return str(self._fields["run_id"])

    @property
    def steps(self) -> int:
        """Steps reserved for this run so far (on resume: the recorded high-water mark)."""
        return self._steps

    def record_steps(self, total_steps: int) -> None:
        """Durably reserve steps up to ``total_steps`` for this run; call before taking them.

        ``total_steps`` counts every step of the run since it was first opened, including
        steps taken before a resume: after resuming from a checkpoint older than
        :attr:`steps`, count re-executed steps on top of :attr:`steps`. Raises
        BudgetExceeded (writing nothing) if the handle has a lifetime budget and the
        reservation would exceed it.
        """
        if not isinstance(total_steps, int) or isinstance(total_steps, bool):
            raise PrivacyInputError(f"total_steps must be an integer, got {total_steps!r}")
        if total_steps < self._steps:
            raise PrivacyInputError(
                f"run {self.run_id!r} already reserved {self._steps} steps; "
                f"total_steps={total_steps} would under-count (counts are cumulative)"
            )
        if total_steps == self._steps:
            return
        with self._ledger._locked() as state:
            self._check_session(state)
            # A retry after a lost acknowledgement (the server committed, the reply was
            # lost) finds its reservation already there: nothing is appended twice.
            if state.runs()[self.run_id][-1].steps < total_steps:
                if self._lifetime_epsilon is not None:
                    self._check_lifetime(state, total_steps)
                self._ledger._append({**self._fields, "event": "steps", "steps": total_steps})
        self._steps = total_steps

    def _check_session(self, state: _State) -> None:
        entries = state.runs().get(self.run_id)
        if not entries:
            raise PrivacyError(
                f"run {self.run_id!r} is missing from privacy ledger {self._ledger.path} "
                "(was the ledger deleted or replaced?); refusing to record steps"
            )
        latest = entries[-1]
        if latest.session != self._fields["session"]:
            raise PrivacyError(
                f"run {self.run_id!r} was re-opened by another process (session "
                f"{latest.session[:8]}); this handle may no longer record steps"
            )

    def _check_lifetime(self, state: _State, total_steps: int) -> None:
        dataset, population = self._fields["dataset_sha256"], self._fields["population"]
        others = [
            SgdSteps(r.noise_multiplier, r.sample_rate, r.steps)
            for r in state.charged(dataset, population, skip=self.run_id)
        ]
        planned = SgdSteps(
            self._fields["noise_multiplier"], self._fields["sample_rate"], total_steps
        )
        _enforce_budget(
            _budget_name(dataset, population),
            others,
            planned,
            self._lifetime_epsilon,
            self._fields["delta"],
            self._fields["accountant"],
        )
