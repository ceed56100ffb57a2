"""Benchmark: durable audit-log appends per second, and verifying a log of 1,000,000 entries.

Run: ``python bench/bench_audit.py [--appends N] [--rounds R] [--entries N] [--dir DIR] [--json]``

Appends
    ``AuditLog.append`` N times into a fresh log (each append takes the file
    lock, checks the file is as it left it, writes one line and ``fsync``s), beside bare
    ``write`` + ``fsync`` of a line of the same size on the same disk, in R
    alternating rounds, so the ratio shows the library's overhead over what
    the disk allows at that moment. Target >= 0.8x bare.
Appends from threads
    ``--threads`` threads (default 8) of this process append to one log at
    once, in rounds alternating with bare ``write`` + ``fsync`` from one
    thread: queued appends share a write and an ``fsync`` (group commit), so
    the ratio may exceed 1. Writers in separate processes do not share fsyncs.
Verification
    The big log is written directly in the library's line format (the RFC 8785
    canonical JSON of each entry and a newline, chained by SHA-256), because a
    million durable appends would take the disk's fsync rate times a million
    (15-60 minutes here). The generator's lines are checked byte for byte
    against ``AuditEntry.line()`` for sampled entries first; all entries carry
    the same timestamp, which verification does not read. The library's own
    writer then signs a checkpoint over all of it (timed: it hashes every
    entry), and ``AuditLog.verify`` is timed (with its worker processes, and
    in one process for the ratio), as is the scan for privacy-spend events
    that ``custodian audit verify`` adds. Target: verify <= 5 s.
    Finally one more append and an incremental checkpoint show what every
    command pays at the end on a log that size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from audits.canonical import canonical_bytes
from audits.keys import SigningKey
from audits.log import ZERO_HASH, AuditEntry, AuditEvent, AuditLog, EventKind, verification
from audits.log.spends import logged_privacy_spends
from stores.local import LocalRecordFile

APPENDS_GOAL = 0.8  # of bare write + fsync
VERIFY_GOAL_S = 5.0
TIME = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
EVENT = AuditEvent(
    actor="ci",
    command="custodian train --out models",
    kind=EventKind.COMMAND_SUCCEEDED,
    stage="train",
    inputs={"data/split/train.csv": "ab" * 32},
    outputs={"models/model.safetensors": "cd" * 32},
    details={"invocation": "0123456789abcdef", "duration_s": 12.5, "exit_code": 0},
)
SPEND = AuditEvent(
    actor="ci",
    command="custodian train --out models",
    kind=EventKind.DECISION,
    stage="train",
    details={
        "invocation": "0123456789abcdef",
        "privacy_spend": {
            "dataset_sha256": "ef" * 32,
            "run_id": "run-1",
            "noise_multiplier": 1.1,
            "sample_rate": 0.01,
            "steps": 100,
            "accountant": "prv",
            "delta": 1e-5,
        },
    },
)
SPEND_EVERY = 100_000


def bench_appends(directory: Path, count: int, rounds: int) -> dict[str, float]:
    """Durable appends/s of the library and of bare write + fsync, interleaved round by round.

    The disk's fsync rate drifts with whatever else the machine is doing, so
    the two are measured in alternating rounds of ``count // rounds`` and each
    total is divided by its own time.
    """
    line = _line(0, ZERO_HASH) + b"\n"
    log = AuditLog(directory / "appends.jsonl", directory / "appends-checkpoint.json")
    log.append(EVENT)  # creates the file and the lock: not what is measured
    fd = os.open(directory / "bare.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    per_round = max(1, count // rounds)
    library_s = bare_s = library_cpu_s = bare_cpu_s = 0.0
    try:
        for _ in range(rounds):
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                log.append(EVENT)
            library_s += time.perf_counter() - start
            library_cpu_s += time.process_time() - cpu
            cpu = time.process_time()
            start = time.perf_counter()
            for _ in range(per_round):
                os.write(fd, line)
                os.fsync(fd)
            bare_s += time.perf_counter() - start
            bare_cpu_s += time.process_time() - cpu
    finally:
        os.close(fd)
    total = per_round * rounds
    return {
        "appends": total,
        "library_per_s": total / library_s,
        "bare_fsync_per_s": total / bare_s,
        # CPU this process spends per append (user + system), beside the wait for the disk.
        "library_cpu_us": library_cpu_s / total * 1e6,
        "bare_cpu_us": bare_cpu_s / total * 1e6,
        "entry_bytes": len(line),
    }


def bench_threads(directory: Path, count: int, rounds: int, threads: int) -> dict[str, float]:
    """Appends/s of ``threads`` threads sharing one log, beside bare write + fsync from one
    thread, interleaved round by round as in :func:`bench_appends`."""
    line = _line(0, ZERO_HASH) + b"\n"
    log = AuditLog(directory / "threads.jsonl", directory / "threads-checkpoint.json")
    log.append(EVENT)
    fd = os.open(directory / "bare-threads.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    per_thread = max(1, count // rounds // threads)

    def append() -> None:
        for _ in range(per_thread):
            log.append(EVENT)

    threaded_s = bare_s = 0.0
    try:
        for _ in range(rounds):
            workers = [threading.Thread(target=append) for _ in range(threads)]
            start = time.perf_counter()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            threaded_s += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(per_thread * threads):
                os.write(fd, line)
                os.fsync(fd)
            bare_s += time.perf_counter() - start
    finally:
        os.close(fd)
    total = per_thread * threads * rounds
    written = sum(1 for _ in log.entries())
    if written != total + 1:
        raise SystemExit(f"the threads' log holds {written} entries, {total + 1} were appended")
    return {
        "threads": threads,
        "appends": total,
        "threaded_per_s": total / threaded_s,
        "bare_fsync_per_s": total / bare_s,
    }


def bench_verify(directory: Path, entries: int) -> dict[str, float]:
    """Time a checkpoint over, and verification of, a log of ``entries`` entries."""
    log = AuditLog(directory / "big.jsonl", directory / "big-checkpoint.json")
    key = SigningKey.generate()
    start = time.perf_counter()
    size = _generate(log.path, entries)
    generated = time.perf_counter() - start

    start = time.perf_counter()
    log.write_checkpoint(key)
    first_checkpoint = time.perf_counter() - start

    start = time.perf_counter()
    report = log.verify([key.public_key])
    verify_s = time.perf_counter() - start
    if not report.ok or report.covered != entries:
        raise SystemExit(f"benchmark log does not verify: {report.summary()}")
    with LocalRecordFile(log.path, None).reading() as reader:
        workers = len(verification._ranges(reader, size)) if reader is not None else 1
    threshold = verification.PARALLEL_MIN_BYTES
    verification.PARALLEL_MIN_BYTES = size + 1  # the same check, in this process alone
    try:
        start, cpu = time.perf_counter(), time.process_time()
        alone = log.verify([key.public_key])
        one_process_s, one_process_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    finally:
        verification.PARALLEL_MIN_BYTES = threshold
    if alone != report:
        raise SystemExit("verification in one process disagrees with the workers")

    start = time.perf_counter()
    spends = sum(1 for _ in logged_privacy_spends(log, report.entries))
    scan_s = time.perf_counter() - start
    if spends != entries // SPEND_EVERY:
        raise SystemExit(f"the scan found {spends} spends, {entries // SPEND_EVERY} were planted")

    start = time.perf_counter()
    log.append(EVENT)
    log.write_checkpoint(key)
    incremental = time.perf_counter() - start
    return {
        "entries": entries,
        "log_mb": size / 1e6,
        "generate_s": generated,
        "first_checkpoint_s": first_checkpoint,
        "verify_s": verify_s,
        "verify_workers": workers,
        "one_process_s": one_process_s,
        "one_process_cpu_s": one_process_cpu_s,
        "spend_scan_s": scan_s,
        "spends_found": spends,
        "append_and_checkpoint_s": incremental,
    }


def _line(seq: int, prev: str, event: AuditEvent = EVENT) -> bytes:
    return AuditEntry(seq=seq, time=TIME, prev=prev, event=event).line()


def _generate(path: Path, entries: int) -> int:
    """Write ``entries`` chained entries in the library's line format; return the byte size."""
    # Canonical JSON sorts keys (event, prev, seq, time) and integers print as digits,
    # so only prev and seq change from one line to the next.
    event = canonical_bytes(EVENT.model_dump(mode="json"))
    first = AuditEntry(seq=0, time=TIME, prev=ZERO_HASH, event=EVENT)
    stamp = canonical_bytes(first.model_dump(mode="json")["time"])
    head, middle, tail = b'{"event":' + event + b',"prev":"', b'","seq":', b',"time":' + stamp
    prev, written, batch = ZERO_HASH, 0, []
    with open(path, "wb") as handle:
        for seq in range(entries):
            if seq % SPEND_EVERY == SPEND_EVERY - 1:
                line = _line(seq, prev, SPEND)  # a few spends for the ledger scan to find
            else:
                line = b"".join((head, prev.encode(), middle, str(seq).encode(), tail, b"}"))
            if seq in (0, 1, 12_345):
                assert line == _line(seq, prev), "generator drifted from the library's format"
            batch.append(line + b"\n")
            prev = hashlib.sha256(line).hexdigest()
            if len(batch) == 10_000:
                written += handle.write(b"".join(batch))
                batch = []
        written += handle.write(b"".join(batch))
        handle.flush()
        os.fsync(handle.fileno())
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8, help="threads sharing one log")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-", dir=args.dir) as work:
        appends = bench_appends(Path(work), args.appends, args.rounds)
        threaded = bench_threads(Path(work), args.appends, args.rounds, args.threads)
        verify = bench_verify(Path(work), args.entries)
    if args.json:
        print(json.dumps({"appends": appends, "threads": threaded, "verify": verify}, indent=2))
        return
    total = verify["verify_s"] + verify["spend_scan_s"]
    print(
        f"durable appends ({appends['appends']:.0f} in {args.rounds} interleaved rounds, "
        f"{appends['entry_bytes']} B lines)"
    )
    ratio = appends["library_per_s"] / appends["bare_fsync_per_s"]
    print(
        f"  library  {appends['library_per_s']:9.0f}/s   "
        f"CPU per append {appends['library_cpu_us']:.0f} us (bare {appends['bare_cpu_us']:.0f} us)"
    )
    print(
        f"  bare write+fsync {appends['bare_fsync_per_s']:7.0f}/s   library/bare {ratio:.2f}   "
        f"goal {APPENDS_GOAL:.1f}"
    )
    print(
        f"  {threaded['threads']} threads, one log {threaded['threaded_per_s']:7.0f}/s   "
        f"bare write+fsync (one thread) {threaded['bare_fsync_per_s']:.0f}/s   "
        f"threads/bare {threaded['threaded_per_s'] / threaded['bare_fsync_per_s']:.2f}   "
        f"(group commit)"
    )
    print(f"verification of {verify['entries']:,} entries ({verify['log_mb']:.0f} MB)")
    print(f"  generate (direct lines)       {verify['generate_s']:7.2f} s")
    print(f"  first checkpoint (all)        {verify['first_checkpoint_s']:7.2f} s")
    print(
        f"  verify ({verify['verify_workers']} workers)          {verify['verify_s']:7.2f} s   "
        f"goal {VERIFY_GOAL_S:.0f} s"
    )
    print(
        f"  verify in one process         {verify['one_process_s']:7.2f} s   "
        f"({verify['one_process_cpu_s']:.2f} s CPU)   "
        f"workers/one process {verify['verify_s'] / verify['one_process_s']:.2f}"
    )
    print(
        f"  privacy-spend scan            {verify['spend_scan_s']:7.2f} s   "
        f"({verify['spends_found']} spends found)"
    )
    print(f"  verify + scan                 {total:7.2f} s")
    print(f"  append + incremental checkpoint {verify['append_and_checkpoint_s'] * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
