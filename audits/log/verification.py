"""Verification: every line's form, sequence and chain, every signed head, and anchors."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from hashlib import sha256 as _sha256
from pathlib import Path

from pydantic import ValidationError

from audits.keys import PublicKey
from audits.log.lines import Malformed, entry_link
from audits.log.records import (
    ZERO_HASH,
    CheckpointState,
    Problem,
    ProblemKind,
    SignatureStatus,
    SignedCheckpoint,
    TornTail,
    TreeHead,
    VerifyReport,
    first_error,
)
from audits.merkle import (
    HASH_SIZE,
    CompactRange,
    consistency_proof,
    node_hash,
    verify_consistency,
)
from stores.local import Reader, Tail, read_blocks
from stores.stream import SnapshotReader


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

    def first(self) -> list[Problem]:
        """The first problem of each kind, in the order found."""
        return list(self._first.values())

    def keep_first(self, found: list[Problem]) -> None:
        """Take problems found further on (a later range of the log): kinds not seen yet."""
        for problem in found:
            self._first.setdefault(problem.kind, problem)

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
    reader: Reader | SnapshotReader | None,
    end: int,
    sizes: set[int],
    *,
    keep_leaves: bool,
    problems: _Problems,
) -> _Scan:
    """Check every line's form, sequence and chain; note the Merkle root at each size in ``sizes``.

    Hashing goes on past a bad line so that the checkpoints can still localise
    what changed. A large log is checked in ranges of whole lines by forked
    workers (each line's checks need only the line and the hash of the one
    before), whose Merkle subtrees are then joined here, in order.
    """
    tree = CompactRange()
    roots = {0: tree.root()}
    kept: list[bytes] | None = [] if keep_leaves else None
    if reader is not None:
        ranges = _ranges(reader, end) if isinstance(reader, Reader) else [(0, end)]
        if len(ranges) > 1:
            tree = _scan_in_workers(reader, ranges, sizes, roots, kept, problems)
        else:
            growth = _Growth(tree, sizes, roots, kept)
            index, prev = 0, ZERO_HASH
            for offset, block in _blocks(reader, end):
                leaves: list[bytes] = []
                index, prev = _check_block(offset, block, index, prev, problems, leaves)
                growth.add(leaves)
    roots[tree.size] = tree.root()
    return _Scan(count=tree.size, roots=roots, leaves=kept)


def _blocks(reader: Reader | SnapshotReader, end: int) -> Iterable[tuple[int, bytes]]:
    if isinstance(reader, Reader):
        return reader.blocks(0, end)
    return [(0, reader.read(0, end))]  # a server's snapshot: in memory already


# Below this size a log is checked in this process: starting workers would cost more than
# they save (a worker checks about 100 MB a second).
PARALLEL_MIN_BYTES = 32 << 20
_MAX_WORKERS = 8


def _ranges(reader: Reader, end: int) -> list[tuple[int, int]]:
    """``[start, end)`` byte ranges of whole lines, one per worker (one range: no workers)."""
    workers = _workers()
    if end < PARALLEL_MIN_BYTES or workers < 2 or _FORK is None:
        return [(0, end)]
    cuts = sorted({reader.line_start_after(end * k // workers, end) for k in range(workers)})
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], end], strict=True) if a < b]


def _workers() -> int:
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return min(_MAX_WORKERS, len(usable) if usable is not None else os.cpu_count() or 1)


# Workers are forked: they inherit the open descriptor, so they read the very file this
# process opened (a path could name another file by then).
_FORK = (
    multiprocessing.get_context("fork")
    if "fork" in multiprocessing.get_all_start_methods()
    else None
)


def _scan_in_workers(
    reader: Reader,
    ranges: list[tuple[int, int]],
    sizes: set[int],
    roots: dict[int, bytes],
    kept: list[bytes] | None,
    problems: _Problems,
) -> CompactRange:
    """Check each range in a worker; join their Merkle subtrees here, in order."""
    starts = [start for start, _ in ranges]
    ends = [stop for _, stop in ranges]
    fds = [reader.fd] * len(ranges)
    # The hash each range's first line must name: that of the line before it, as read here.
    prevs = [ZERO_HASH if start == 0 else _hash_before(reader, start) for start in starts]
    with ProcessPoolExecutor(max_workers=len(ranges), mp_context=_FORK) as pool:
        counts = list(pool.map(_count_lines, fds, starts, ends))
        firsts = [sum(counts[:number]) for number in range(len(ranges))]
        wanted = [
            sorted(size for size in sizes if first < size <= first + count)
            for first, count in zip(firsts, counts, strict=True)
        ]
        keep = [kept is not None] * len(ranges)
        results = pool.map(_scan_range, fds, starts, ends, firsts, prevs, wanted, keep)
        size, hashes = 0, []
        for found, subtrees, at_sizes, leaves in results:
            problems.keep_first(found)
            for at, below in at_sizes:
                roots[at] = CompactRange(*_joined(size, hashes, below)).root()
            size, hashes = _joined(size, hashes, subtrees)
            if kept is not None:
                kept.extend(leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE))
    return CompactRange(size, hashes)


def _hash_before(reader: Reader, start: int) -> str:
    line = reader.line_ending_at(start)
    assert line is not None, "a range starts just after a newline"
    return _sha256(line.data).hexdigest()


def _count_lines(fd: int, start: int, end: int) -> int:
    """Lines in ``[start, end)`` (run in a worker)."""
    count = 0
    for _, block in read_blocks(fd, start, end):
        count += block.count(b"\n") + (not block.endswith(b"\n"))
    return count


# A range's leaves as the perfect subtrees they form: (height, hash), left to right.
_Subtrees = list[tuple[int, bytes]]


def _scan_range(
    fd: int, start: int, end: int, first: int, prev: str, sizes: list[int], keep: bool
) -> tuple[list[Problem], _Subtrees, list[tuple[int, _Subtrees]], bytes]:
    """Check the lines in ``[start, end)``, the first being entry ``first`` that must name
    ``prev`` (run in a worker). Returns the first problem of each kind, the range's Merkle
    subtrees, those of the range up to each size in ``sizes``, and (if ``keep``) the leaves."""
    problems = _Problems()
    leaves: list[bytes] = []
    index = first
    for offset, block in read_blocks(fd, start, end):
        index, prev = _check_block(offset, block, index, prev, problems, leaves)
    subtrees, at_sizes = _subtrees(leaves, first, set(sizes))
    return problems.first(), subtrees, at_sizes, b"".join(leaves) if keep else b""


def _subtrees(
    leaves: list[bytes], first: int, sizes: set[int]
) -> tuple[_Subtrees, list[tuple[int, _Subtrees]]]:
    """The perfect subtrees (RFC 9162: aligned on their size) that entries ``first``.. make,
    merged as far as the range allows: a leaf at ``position`` completes one subtree per
    trailing one bit of ``position``, as long as its left half lies in the range."""
    hashes: list[bytes] = []
    heights: list[int] = []
    at_sizes: list[tuple[int, _Subtrees]] = []
    for position, leaf in enumerate(leaves, start=first):
        hashes.append(leaf)
        heights.append(0)
        carries, height = position, 0
        while carries & 1 and position + 1 - (2 << height) >= first:
            right = hashes.pop()
            heights.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            heights[-1] += 1
            carries >>= 1
            height += 1
        if position + 1 in sizes:
            at_sizes.append((position + 1, list(zip(heights, hashes, strict=True))))
    return list(zip(heights, hashes, strict=True)), at_sizes


def _joined(size: int, hashes: list[bytes], subtrees: _Subtrees) -> tuple[int, list[bytes]]:
    """The compact range of a tree of ``size`` leaves (``hashes``) grown by ``subtrees``
    that start where it ends (each aligned on its size, so it merges like a leaf does)."""
    hashes = list(hashes)
    for height, subtree in subtrees:
        hashes.append(subtree)
        carries = size >> height
        while carries & 1:
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            carries >>= 1
        size += 1 << height
    return size, hashes


class _Growth:
    """Grows the Merkle tree leaf by leaf (in one process), noting the root at each size asked
    for."""

    def __init__(
        self,
        tree: CompactRange,
        sizes: set[int],
        roots: dict[int, bytes],
        kept: list[bytes] | None,
    ) -> None:
        self._tree, self._sizes, self._roots, self._kept = tree, sizes, roots, kept

    def add(self, leaves: Iterable[bytes]) -> None:
        tree, sizes, roots, kept = self._tree, self._sizes, self._roots, self._kept
        for leaf in leaves:
            tree.append(leaf)
            if tree.size in sizes:
                roots[tree.size] = tree.root()
            if kept is not None:
                kept.append(leaf)


def _check_block(
    offset: int, block: bytes, index: int, prev: str, problems: _Problems, leaves: list[bytes]
) -> tuple[int, str]:
    """Check the lines of ``block`` (at byte ``offset``), the first being entry ``index`` that
    must name ``prev``; add each line's leaf hash to ``leaves``; return the next index and
    prev. The one loop over every line: no object per line."""
    *datas, rest = block.split(b"\n")
    if rest:  # only the last block may end without a newline
        datas.append(rest)
    for data in datas:
        try:
            seq, line_prev = entry_link(data)
        except Malformed as exc:
            _malformed(index, offset, exc, problems)
        else:
            if seq != index or line_prev != prev:
                _unchained(index, offset, seq, line_prev, prev, problems)
        leaves.append(_sha256(b"\x00" + data).digest())  # merkle.leaf_hash, inlined
        prev = _sha256(data).hexdigest()
        index += 1
        offset += len(data) + 1
    return index, prev


def _malformed(index: int, offset: int, exc: Malformed, problems: _Problems) -> None:
    where = f"entry {index} (byte {offset})"
    problems.add(ProblemKind.MALFORMED_ENTRY, f"{where}: {exc}", index, offset)


def _unchained(
    index: int, offset: int, seq: int, line_prev: str, prev: str, problems: _Problems
) -> None:
    where = f"entry {index} (byte {offset})"
    if seq != index:
        problems.add(
            ProblemKind.SEQUENCE,
            f"{where}: sequence number {seq}, expected {index} "
            f"(an entry was deleted, inserted, duplicated or moved)",
            index,
            offset,
        )
    if line_prev != prev:
        what = "the chain start (64 zeros)" if index == 0 else f"the hash of entry {index - 1}"
        problems.add(
            ProblemKind.CHAIN,
            f"{where}: prev hash mismatch: it is {line_prev[:16]}..., {what} is {prev[:16]}...",
            index,
            offset,
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


@dataclass(frozen=True)
class Snapshot:
    """What verification reads under the lock: the log's intact end and both checkpoint files."""

    tail: Tail
    state_bytes: bytes | None
    history_bytes: bytes | None
    checkpoint_path: Path
    history_path: Path


def verify_snapshot(
    reader: Reader | SnapshotReader | None,
    snapshot: Snapshot,
    trusted: Mapping[str, PublicKey],
    against: SignedCheckpoint | None,
) -> VerifyReport:
    """Verify the log read by ``reader`` up to the snapshot's intact end (the lock not held)."""
    problems = _Problems()
    warnings: list[str] = []
    heads = _collect_heads(snapshot, problems, warnings)
    sizes = {head.tree_head.tree_size for _, head in heads}
    if against is not None:
        sizes.add(against.tree_head.tree_size)
    tail = snapshot.tail
    scan = _scan_entries(
        reader, tail.end, sizes, keep_leaves=against is not None, problems=problems
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
    if scan.count and not heads and snapshot.state_bytes is None:
        problems.add(
            ProblemKind.MISSING_CHECKPOINT,
            f"no signed checkpoint covers the {scan.count} entries "
            f"({snapshot.checkpoint_path} is missing)",
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
    snapshot: Snapshot, problems: _Problems, warnings: list[str]
) -> list[tuple[str, SignedCheckpoint]]:
    heads: list[tuple[str, SignedCheckpoint]] = []
    if snapshot.state_bytes is not None:
        try:
            state = CheckpointState.model_validate_json(snapshot.state_bytes)
            heads.append((f"checkpoint {snapshot.checkpoint_path.name}", state.checkpoint))
        except ValidationError as exc:
            problems.add(
                ProblemKind.INVALID_CHECKPOINT,
                f"{snapshot.checkpoint_path} is not a checkpoint: {first_error(exc)}",
            )
    history_name = snapshot.history_path.name
    if snapshot.history_bytes:
        records = snapshot.history_bytes.split(b"\n")
        if records[-1]:
            warnings.append(f"{history_name}: torn last record ignored")
        for number, record in enumerate(records[:-1], start=1):
            try:
                signed = SignedCheckpoint.model_validate_json(record)
            except ValidationError as exc:
                problems.add(
                    ProblemKind.INVALID_CHECKPOINT,
                    f"{history_name} record {number} is not a signed checkpoint: "
                    f"{first_error(exc)}",
                )
                continue
            heads.append((f"{history_name} record {number}", signed))
    unique: dict[tuple[TreeHead, str], tuple[str, SignedCheckpoint]] = {}
    for label, head in heads:
        unique.setdefault((head.tree_head, head.signature), (label, head))
    return list(unique.values())
