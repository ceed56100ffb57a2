"""Benchmark: the full leakage/contamination scan at 1,000,000 train x 200,000 test rows.

Run: ``python bench/bench_checks.py [--train-rows N] [--test-rows N] [--json]``

The frames have 20 columns (an identifier, a time, a binary label, 9 numeric,
6 categorical and 1 free-text feature, 1 label-encoding feature) with problems
of every finding type planted, plus a 10,000-row reference set. The label is
given away by two columns together (``refund + rebate > 0``, a multi-column
leak for the boosted-tree check), and ``plan`` is set by the sensitive ``age``
(a proxy). Time and peak memory are reported per phase: preparing
(normalising and hashing every cell), the text search (train streamed, in
chunks, past the MinHash/LSH buckets of test and the references, whose
matches the near-duplicate and contamination detectors then read), the
numeric similarity index (built after the text search, as the near-duplicate
check does, so the two working sets never coincide), the label analysis
(single columns and the model) and each detector. Times come from an
untraced pass; memory from a second pass under ``tracemalloc`` (Python and
numpy allocations; scipy's KD-tree nodes are allocated in C++ and not traced),
and the process's peak RSS is printed at the end.

Peak RSS of the end-to-end scan is the kernel's high-water mark (``VmHWM``,
reset first); the inputs' share is the RSS just before it. Generating the
frames leaves freed memory that glibc and arrow's allocator (mimalloc) keep
mapped, which no loader would leave behind: it is handed back before that
reading (``gc.collect``, ``malloc_trim``, arrow's ``release_unused``), and the
RSS before and after is printed. The timed pass also records each phase's
``VmHWM`` over the RSS it started at (C and C++ allocations included); it runs
after the end-to-end scan, so memory the allocators kept from that is reused
and not counted: a lower bound, where the traced figures are exact for Python
and numpy.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from governance.checks import CheckConfig, FindingType
from governance.checks.frames import ScanContext
from governance.checks.leakage import label_analysis
from governance.checks.registry import DETECTORS
from governance.checks.scan import prepare_scan, run_detectors

# ``note`` is declared free text (never trained on), so its PII is a warning.
CONFIG = CheckConfig(
    label="label",
    id_column="person",
    time_column="day",
    sensitive_columns=("age",),
    text_columns=("note",),
)
GOAL_SECONDS = 10.0
GOAL_RSS_MIB = 1024.0
WORDS = np.array([f"w{i:05d}" for i in range(20_000)])
PLANTED = {
    "exact_duplicate": 1_000,
    "near_duplicate": 1_000,
    "text_near_duplicate": 500,
    "group_leakage": 500,
    "temporal_leakage": 1_000,
    "duplicate_rows": 2_000,
    "conflicting_labels": 500,
    "reference_exact": 500,
    "reference_near": 500,
    "pii": 2_000,
}


# What the scan finds at the default 1M x 200k (severity:count per detector);
# text near-duplicates also count the numeric ones, whose notes were copied.
EXPECTED = {
    "exact_duplicate": ["critical:1000"],
    "near_duplicate": ["warning:1000", "warning:1500"],
    "group_leakage": ["critical:500"],
    "temporal_leakage": ["warning:1000"],
    "target_leakage": ["critical:2"],
    "proxy": ["critical:1"],
    "reference_contamination": ["critical:500", "warning:500", "warning:500"],
    "duplicate_rows": ["warning:1995"],
    "conflicting_labels": ["warning:4", "warning:500"],
    "pii": ["warning:2000"],
}


def _rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 2**10


def _reset_peak_rss() -> None:
    """Start ``VmHWM`` again from the current RSS (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def release_generation_garbage() -> None:
    """Hand back the memory that generating the data freed but the allocators kept (Linux, glibc).

    Only the bench does this, between making the data and scanning it: the
    scan is measured on inputs laid out as a loader leaves them.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    pa.default_memory_pool().release_unused()


def make_frame(n: int, rng: np.random.Generator, first_person: int, first_day: str) -> pd.DataFrame:
    x = rng.normal(size=(n, 6)).round(4)
    label = (x[:, 0] + x[:, 1] + rng.normal(size=n) > 0).astype(np.int64)
    # Refunds and rebates are paid only after a positive outcome, each in about
    # 60% of such rows and at least one of them always: together they give the
    # label away (label = refund + rebate > 0), neither alone does.
    paid = rng.random((n, 2)) < 0.6
    paid[:, 1] |= ~paid[:, 0]
    paid &= label[:, None] == 1
    amounts = np.where(paid, rng.gamma(2.0, 40.0, size=(n, 2)).round(2) + 0.01, 0.0)
    age = rng.integers(18, 90, size=n)
    zipf = 1.0 / (np.arange(len(WORDS)) + 20.0)
    words = rng.choice(WORDS, size=(n, 12), p=zipf / zipf.sum())
    return pd.DataFrame(
        {
            "person": first_person + np.arange(n) // 3,
            # About 100 rows a day: a million train rows span 27 years, before any test day.
            "day": pd.Timestamp(first_day) + pd.to_timedelta(np.arange(n) // 100, unit="D"),
            "x0": x[:, 0],
            "x1": x[:, 1],
            "x2": x[:, 2],
            "x3": x[:, 3],
            "income": np.exp(x[:, 4] + 10).round(2),
            "age": age,
            "visits": rng.poisson(2, size=n),
            "score": np.where(rng.random(n) < 0.05, np.nan, x[:, 5]),
            "rebate": amounts[:, 1],
            "colour": rng.choice(["red", "green", "blue", "cyan", "black"], size=n),
            "region": rng.choice([f"region {i}" for i in range(50)], size=n),
            # A proxy of the sensitive attribute age: the plan is set by age bracket.
            "plan": np.select([age < 35, age < 60], ["basic", "plus"], "premium"),
            "segment": rng.choice([f"seg-{i}" for i in range(1000)], size=n),
            "channel": rng.choice(["web", "phone", "branch", "partner"], size=n),
            "weekday": rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], size=n),
            "note": [" ".join(row) for row in words],
            "refund": amounts[:, 0],
            "label": label,
        }
    )


def make_data(
    n_train: int, n_test: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Train, test and a reference set with every planted problem."""
    rng = np.random.default_rng(seed)
    train = make_frame(n_train, rng, 0, "2000-01-01")
    test = make_frame(n_test, rng, 10_000_000, "2030-01-01")
    reference = make_frame(10_000, rng, 20_000_000, "1990-01-01")
    compared = [c for c in train.columns if c not in ("person", "day")]
    numeric = ["x0", "x1", "x2", "x3", "rebate"]

    def take(pool: int, n: int) -> np.ndarray:
        return rng.choice(pool, size=n, replace=False)

    # Train first, so that the train rows later copied into test stay as copied.
    late = take(n_train, PLANTED["temporal_leakage"])
    train.loc[late, "day"] = pd.Timestamp("2031-01-01")
    repeats = take(n_train, PLANTED["duplicate_rows"])
    train.loc[repeats, compared] = train.loc[take(n_train, len(repeats)), compared].to_numpy()

    rows = rng.permutation(n_test)  # disjoint test rows for each planted problem
    cursor = 0

    def test_rows(n: int) -> np.ndarray:
        nonlocal cursor
        cursor += n
        return rows[cursor - n : cursor]

    exact = test_rows(PLANTED["exact_duplicate"])
    test.loc[exact, compared] = train.loc[take(n_train, len(exact)), compared].to_numpy()
    near = test_rows(PLANTED["near_duplicate"])
    test.loc[near, compared] = train.loc[take(n_train, len(near)), compared].to_numpy()
    test.loc[near, numeric] += rng.normal(scale=1e-3, size=(len(near), len(numeric)))
    text = test_rows(PLANTED["text_near_duplicate"])
    copied = train.loc[take(n_train, len(text)), "note"].str.split()
    test.loc[text, "note"] = [" ".join([*w[:-1], "changed"]) for w in copied]
    group = test_rows(PLANTED["group_leakage"])
    test.loc[group, "person"] = train.loc[take(n_train, len(group)), "person"].to_numpy()
    conflict = test_rows(PLANTED["conflicting_labels"])
    test.loc[conflict, compared] = train.loc[take(n_train, len(conflict)), compared].to_numpy()
    test.loc[conflict, "label"] = 1 - test.loc[conflict, "label"]
    pii = test_rows(PLANTED["pii"])
    test.loc[pii, "note"] = test.loc[pii, "note"] + " mail me at someone@example.com"

    features = [c for c in compared if c != "label"]
    ref_exact = np.arange(PLANTED["reference_exact"])
    reference.loc[ref_exact, features] = train.loc[
        take(n_train, len(ref_exact)), features
    ].to_numpy()
    ref_near = np.arange(len(ref_exact), len(ref_exact) + PLANTED["reference_near"])
    reference.loc[ref_near, features] = train.loc[take(n_train, len(ref_near)), features].to_numpy()
    reference.loc[ref_near, numeric] += rng.normal(scale=1e-3, size=(len(ref_near), len(numeric)))
    return train, test, {"benchmark": reference.drop(columns=["person", "day", "label"])}


def phases(
    train: pd.DataFrame, test: pd.DataFrame, references: dict[str, pd.DataFrame]
) -> list[tuple[str, Callable[[dict[str, ScanContext]], object]]]:
    """The scan, split into timed steps that together do exactly what ``scan`` does."""

    def prepare(state: dict[str, ScanContext]) -> None:
        state["ctx"] = prepare_scan(train, test, references, config=CONFIG)

    steps: list[tuple[str, Callable[[dict[str, ScanContext]], object]]] = [
        ("prepare (normalise + hash)", prepare),
        # In the order the near-duplicate check builds them.
        ("text search: MinHash/LSH", lambda s: s["ctx"].text_near),
        ("index: numeric KD-tree", lambda s: s["ctx"].numeric_near),
        # Single-column scores and the boosted-tree model on a bounded sample;
        # target_leakage reports it, and the duplicate checks leave out what it finds.
        ("label analysis (model)", lambda s: label_analysis(s["ctx"])),
    ]
    for kind in FindingType:
        steps.append((str(kind), lambda s, kind=kind: DETECTORS[kind](s["ctx"])))
    return steps


def timed_pass(
    steps: list,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, list]]:
    """Wall and CPU seconds per step (CPU: all threads; on a shared machine wall inflates).

    Also each step's peak RSS over the RSS it started at, in MiB (``VmHWM``).
    """
    state: dict[str, ScanContext] = {}
    seconds, cpu, rss_peaks, results = {}, {}, {}, {}
    for name, step in steps:
        start_rss = _rss_mib("VmRSS")
        _reset_peak_rss()
        start, start_cpu = time.perf_counter(), time.process_time()
        results[name] = step(state)
        seconds[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - start_cpu
        rss_peaks[name] = _rss_mib("VmHWM") - start_rss
    return seconds, cpu, rss_peaks, results


def traced_pass(steps: list) -> dict[str, float]:
    state: dict[str, ScanContext] = {}
    peaks = {}
    tracemalloc.start()
    for name, step in steps:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step(state)
        peaks[name] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    before_data_rss = _rss_mib("VmRSS")
    train, test, references = make_data(args.train_rows, args.test_rows)
    generated_rss = _rss_mib("VmRSS")
    release_generation_garbage()
    steps = phases(train, test, references)
    # End to end first, while nothing else is allocated: its peak RSS, less
    # what the input frames hold, is the scan's own memory.
    inputs_rss = _rss_mib("VmRSS")
    _reset_peak_rss()
    start, start_cpu = time.perf_counter(), time.process_time()
    findings = run_detectors(prepare_scan(train, test, references, config=CONFIG))
    end_to_end, end_to_end_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    scan_rss = _rss_mib("VmHWM")
    del findings
    seconds, cpu, rss_peaks, results = timed_pass(steps)
    memory = traced_pass(steps)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10

    found = {
        name: sorted(f"{f.severity}:{f.count}" for f in result)
        for name, result in results.items()
        if isinstance(result, list)
    }
    total = sum(seconds.values())
    default_size = (len(train), len(test)) == (1_000_000, 200_000)
    matches = {name: found[name] for name in EXPECTED} == EXPECTED
    if args.json:
        print(
            json.dumps(
                {
                    "train_rows": len(train),
                    "test_rows": len(test),
                    "columns": train.shape[1],
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "peak_mib": memory,
                    "peak_rss_over_start_mib": rss_peaks,
                    "total_seconds": total,
                    "scan_seconds": end_to_end,
                    "scan_cpu_seconds": end_to_end_cpu,
                    "max_rss_mib": max_rss,
                    "rss_before_data_mib": before_data_rss,
                    "generated_rss_mib": generated_rss,
                    "inputs_rss_mib": inputs_rss,
                    "scan_peak_rss_mib": scan_rss,
                    "findings_as_expected": matches if default_size else None,
                    "findings": found,
                },
                indent=2,
            )
        )
    else:
        report(
            seconds,
            cpu,
            memory,
            rss_peaks,
            found,
            total,
            (end_to_end, end_to_end_cpu),
            train,
            test,
            references,
        )
        print(
            f"RSS before the data: {before_data_rss:,.0f} MiB; after making it:"
            f" {generated_rss:,.0f} MiB, after handing back the generator's freed memory:"
            f" {inputs_rss:,.0f} MiB"
        )
        print(
            f"peak RSS during scan(): {scan_rss:,.0f} MiB (inputs held: {inputs_rss:,.0f} MiB,"
            f" the scan's own: {scan_rss - inputs_rss:,.0f} MiB); goal < {GOAL_RSS_MIB:,.0f} MiB:"
            f" {'met' if scan_rss < GOAL_RSS_MIB else 'MISSED'}"
        )
        print(
            f"process peak RSS (data generation and the traced pass included): {max_rss:,.0f} MiB"
        )
    if default_size:
        assert matches, f"findings differ from the planted ones: {found} != {EXPECTED}"
        print("findings: every planted count found, as expected")


def report(
    seconds, cpu, memory, rss_peaks, found, total, end_to_end, train, test, references
) -> None:
    print(
        f"scan of {len(train):,} train x {len(test):,} test rows, {train.shape[1]} columns,"
        f" + {sum(len(r) for r in references.values()):,} reference rows"
    )
    print("peak MiB: traced Python and numpy allocations; RSS +MiB: VmHWM over the phase's start")
    print(
        f"{'phase':<28} {'time s':>8} {'CPU s':>7} {'peak MiB':>9} {'RSS +MiB':>9}"
        "  findings (severity:count)"
    )
    for name in seconds:
        listed = ", ".join(found.get(name, [])) or ("-" if name in found else "")
        print(
            f"{name:<28} {seconds[name]:>8.2f} {cpu[name]:>7.2f} {memory[name]:>9.0f}"
            f" {rss_peaks[name]:>9.0f}  {listed}"
        )
    print(
        f"{'total':<28} {total:>8.2f} {sum(cpu.values()):>7.2f} {max(memory.values()):>9.0f}"
        f" {max(rss_peaks.values()):>9.0f}"
    )
    wall, cpu_seconds = end_to_end
    print(f"scan() end to end: {wall:.2f} s ({cpu_seconds:.2f} s CPU);")
    print(f"goal <= {GOAL_SECONDS:.0f} s: {'met' if wall <= GOAL_SECONDS else 'MISSED'}")
    print(f"planted: {PLANTED}")


if __name__ == "__main__":
    main()
