"""Benchmark: ``check-large`` on a 10,000,000-row Parquet train file and a 2,000,000-row test file.

Run: ``python bench/bench_large_checks.py [--rows N] [--workdir DIR] [--keep] [--json]``

Writes, batch by batch (bounded memory: one 250,000-row batch at a time, row
groups of 125,000), a train file of ``--rows`` rows and a test file of a fifth
as many, 12 columns (identifier, timestamp, binary label, 5 numeric and 4
categorical features), with problems of every out-of-core type planted in
known numbers. Then, for each setting (``--memory-limit 1GB --gx-chunk-rows
250000`` and ``256MB / 100000``), in a fresh Python process, it runs and times
each phase: reading and hashing both splits, each detector, and the GX schema
suite over train and over test; rows/s is the rows the phase reads (both
splits for the scan phases, one for a suite) over its time.

Peak RSS is measured, not estimated: the kernel's high-water mark of the
process's resident memory (``VmHWM``), reset before each phase through
``/proc/self/clear_refs``, so each figure is the process's real peak during
that phase, including the interpreter, the imported libraries (GX, pandas,
pyarrow: about 300 MiB before any data) and DuckDB's buffer pool, which keeps
cached blocks up to the memory limit between phases. Linux only.

The generated files and DuckDB's spill files live under ``--workdir`` (a new
temporary directory by default), removed at the end unless ``--keep``. Exit 1
if any planted count is not found exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BATCH = 250_000
ROW_GROUP = 125_000
SETTINGS = (("1GB", 250_000), ("256MB", 100_000))
FEATURES = ["x1", "x2", "x3", "x4", "amount", "visits", "colour", "region", "plan", "channel"]
COMPARED = [*FEATURES, "label"]
COLOURS = ["red", "green", "blue", "cyan", "black"]
REGIONS = [f"region {i}" for i in range(40)]
PLANS = ["basic", "plus", "premium"]
CHANNELS = ["web", "phone", "branch", "partner"]
TRAIN_START = pd.Timestamp("2000-01-01")
TEST_START = pd.Timestamp("2010-01-01")
LATE = pd.Timestamp("2030-01-01")
# Planted problems: how many, and where (train sources all lie in train's first batch).
PLANTED = {
    "duplicate_rows_train": 2_000,  # train rows 100,000.. repeat rows 0..
    "conflicting_labels_train": 500,  # train rows 120,000.. repeat rows 10,000.., label flipped
    "temporal_leakage": 1_000,  # train rows of the last batch dated 2030
    "exact_duplicate": 1_000,  # test rows 1,000.. repeat train rows 20,000..
    "group_leakage": 500,  # test rows 3,000.. reuse the identifiers of train rows 30,000..
    "conflicting_labels_across": 500,  # test rows 5,000.. repeat train rows 40,000.., flipped
    "duplicate_rows_test": 400,  # test rows 8,000.. repeat test rows 7,000..
    "gx_out_of_range": 1,  # train's last row has a negative amount
}


def batch_frame(split: int, index: int, start: int, n: int, first: pd.Timestamp) -> pd.DataFrame:
    """Batch ``index`` of a split: a pure function of (split, index), so it can be regenerated."""
    rng = np.random.default_rng([7, split, index])
    rows = start + np.arange(n)
    x = rng.normal(size=(n, 4)).round(4)
    return pd.DataFrame(
        {
            "person": split * 1_000_000_000 + rows,
            "day": (first + pd.to_timedelta(rows * 10, unit="s")).as_unit("us"),
            "x1": x[:, 0],
            "x2": x[:, 1],
            "x3": x[:, 2],
            "x4": x[:, 3],
            "amount": np.exp(rng.normal(3, 1, size=n)).round(2),
            "visits": rng.poisson(2, size=n),
            "colour": rng.choice(COLOURS, size=n),
            "region": rng.choice(REGIONS, size=n),
            "plan": rng.choice(PLANS, size=n),
            "channel": rng.choice(CHANNELS, size=n),
            "label": (x[:, 0] + x[:, 1] + rng.normal(size=n) > 0).astype(np.int64),
        }
    )


def copy_rows(
    target: pd.DataFrame, at: int, source: pd.DataFrame, start: int, n: int, columns: list
) -> None:
    target.loc[at : at + n - 1, columns] = source.loc[start : start + n - 1, columns].to_numpy()


def write_split(path: Path, batches: list[Callable[[], pd.DataFrame]]) -> None:
    writer = None
    try:
        for make in batches:
            table = pa.Table.from_pandas(make(), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def generate(directory: Path, n_train: int) -> tuple[Path, Path]:
    n_test = n_train // 5
    first_train = batch_frame(0, 0, 0, min(BATCH, n_train), TRAIN_START)
    n_batches = -(-n_train // BATCH)

    def train_batch(index: int) -> pd.DataFrame:
        start = index * BATCH
        frame = (
            first_train.copy()
            if index == 0
            else batch_frame(0, index, start, min(BATCH, n_train - start), TRAIN_START)
        )
        if index == 0:
            copy_rows(frame, 100_000, first_train, 0, PLANTED["duplicate_rows_train"], COMPARED)
            n = PLANTED["conflicting_labels_train"]
            copy_rows(frame, 120_000, first_train, 10_000, n, FEATURES)
            frame.loc[120_000 : 120_000 + n - 1, "label"] = (
                1 - first_train.loc[10_000 : 10_000 + n - 1, "label"].to_numpy()
            )
        if index == n_batches - 1:
            frame.loc[: PLANTED["temporal_leakage"] - 1, "day"] = LATE
            frame.loc[len(frame) - 1, "amount"] = -1.0
        return frame

    def test_batch(index: int) -> pd.DataFrame:
        start = index * BATCH
        frame = batch_frame(1, index, start, min(BATCH, n_test - start), TEST_START)
        if index == 0:
            copy_rows(frame, 1_000, first_train, 20_000, PLANTED["exact_duplicate"], COMPARED)
            n = PLANTED["group_leakage"]
            frame.loc[3_000 : 3_000 + n - 1, "person"] = first_train.loc[
                30_000 : 30_000 + n - 1, "person"
            ].to_numpy()
            n = PLANTED["conflicting_labels_across"]
            copy_rows(frame, 5_000, first_train, 40_000, n, FEATURES)
            frame.loc[5_000 : 5_000 + n - 1, "label"] = (
                1 - first_train.loc[40_000 : 40_000 + n - 1, "label"].to_numpy()
            )
            copy_rows(frame, 8_000, frame.copy(), 7_000, PLANTED["duplicate_rows_test"], COMPARED)
        return frame

    train, test = directory / "train.parquet", directory / "test.parquet"
    write_split(train, [lambda i=i: train_batch(i) for i in range(n_batches)])
    write_split(test, [lambda i=i: test_batch(i) for i in range(-(-n_test // BATCH))])
    return train, test


def expected_counts() -> dict[str, int]:
    """(finding type, side) -> the count the scan must report, from PLANTED."""
    return {
        "exact_duplicate": PLANTED["exact_duplicate"],
        "group_leakage": PLANTED["group_leakage"],
        "temporal_leakage": PLANTED["temporal_leakage"],
        "duplicate_rows/train": PLANTED["duplicate_rows_train"],
        "duplicate_rows/test": PLANTED["duplicate_rows_test"],
        # Both rows of each pair carry a label the other contradicts.
        "conflicting_labels/train": 2 * PLANTED["conflicting_labels_train"],
        "conflicting_labels/both": PLANTED["conflicting_labels_across"],
        "gx train: expect_column_values_to_be_between amount": PLANTED["gx_out_of_range"],
    }


def record(name: str, rows: int):
    from governance.provenance import ColumnRole, ColumnSpec, Provenance

    def number(column: str, **bounds) -> ColumnSpec:
        return ColumnSpec(name=column, type="number", **bounds)

    def text(column: str, values: list[str]) -> ColumnSpec:
        return ColumnSpec(name=column, type="string", categories=values)

    return Provenance(
        name=name,
        source=f"file:{name}.parquet",
        license="CC0-1.0",
        retrieved_at="2024-01-01T00:00:00Z",
        sha256="0" * 64,
        rows=rows,
        columns=[
            ColumnSpec(name="person", type="integer", role=ColumnRole.identifier),
            ColumnSpec(name="day", type="datetime", role=ColumnRole.time),
            *(number(c, minimum=-10, maximum=10) for c in ("x1", "x2", "x3", "x4")),
            number("amount", minimum=0),
            ColumnSpec(name="visits", type="integer", minimum=0),
            text("colour", COLOURS),
            text("region", REGIONS),
            text("plan", PLANS),
            text("channel", CHANNELS),
            ColumnSpec(name="label", type="integer", role=ColumnRole.label, categories=[0, 1]),
        ],
    )


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def measure(name: str, rows: int, step: Callable[[], object], log: list) -> object:
    """Run ``step``; append its seconds, rows/s and peak RSS (VmHWM reset before it) to ``log``."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    log.append(
        {
            "phase": name,
            "rows": rows,
            "seconds": seconds,
            "rows_per_s": rows / seconds if seconds else None,
            "rss_before_mib": before / 2**20,
            "peak_rss_mib": _status("VmHWM") / 2**20,
        }
    )
    return result


def run_setting(train: Path, test: Path, memory: str, chunk: int, threads: int, spill: Path):
    """One setting, in this (fresh) process: every phase measured; returns the log and counts."""
    from governance.checks import CheckConfig
    from governance.large import SUPPORTED, ScanLimits, scan_sampled
    from governance.large.detectors import DETECTORS
    from governance.large.engine import Engine, duckdb_errors_named
    from governance.large.scan import prepare_large, run_one
    from governance.large.suite import schema_suite_large

    config = CheckConfig(label="label", id_column="person", time_column="day")
    limits = ScanLimits(
        memory_limit=memory, threads=threads, temp_directory=spill, gx_chunk_rows=chunk
    )
    n_train, n_test = (pq.ParquetFile(p).metadata.num_rows for p in (train, test))
    log: list[dict] = []
    found: dict[str, int] = {}
    with duckdb_errors_named(limits), Engine(limits) as engine:
        ctx = measure(
            "read + hash", n_train + n_test, lambda: prepare_large(engine, train, test, config), log
        )
        for kind in SUPPORTED:
            findings = measure(
                str(kind), n_train + n_test, lambda k=kind: run_one(ctx, DETECTORS[k]), log
            )
            for f in findings:
                side = (
                    "both" if f.train_rows and f.test_rows else "train" if f.train_rows else "test"
                )
                many = kind in ("duplicate_rows", "conflicting_labels")
                found[f"{kind}/{side}" if many else str(kind)] = f.count
    # Target leakage, proxies and PII on a bounded sample of each split.
    sample = min(limits.sample_rows, n_train) + min(limits.sample_rows, n_test)
    sampled = measure(
        "sampled checks", sample, lambda: scan_sampled(train, test, config, limits), log
    )
    for f in sampled:
        found[f"sampled {f.type}: {', '.join(f.columns)}"] = f.count
    for split, path, rows in (("train", train, n_train), ("test", test, n_test)):
        outcome = measure(
            f"GX suite {split}",
            rows,
            lambda p=path, r=rows, s=split: schema_suite_large(p, record(s, r), limits),
            log,
        )
        for failure in outcome.failed:
            found[f"gx {split}: {failure.expectation} {failure.column}"] = failure.unexpected_count
    return log, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="train rows (test: a fifth)")
    parser.add_argument("--workdir", type=Path, help="where files and spill go [a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--measure", nargs=4, metavar=("TRAIN", "TEST", "MEMORY", "CHUNK"))
    args = parser.parse_args()
    if args.measure:  # the child process of one setting
        train, test, memory, chunk = args.measure
        log, found = run_setting(
            Path(train), Path(test), memory, int(chunk), args.threads, args.workdir
        )
        print(json.dumps({"phases": log, "found": found}))
        return
    if args.rows < BATCH:
        parser.error(f"--rows must be at least {BATCH:,} (the planted rows need one full batch)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-large-", dir=args.workdir))
    try:
        load_before = os.getloadavg()
        start = time.perf_counter()
        train, test = generate(workdir, args.rows)
        generated = time.perf_counter() - start
        results = []
        for memory, chunk in SETTINGS:
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(train), str(test), memory, str(chunk),
                 "--threads", str(args.threads), "--workdir", str(workdir)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if child.returncode:
                sys.exit(f"setting {memory}/{chunk} failed:\n{child.stderr}")
            results.append(
                {"memory_limit": memory, "gx_chunk_rows": chunk, **json.loads(child.stdout)}
            )
        load_after = os.getloadavg()
        report = {
            "train_rows": pq.ParquetFile(train).metadata.num_rows,
            "test_rows": pq.ParquetFile(test).metadata.num_rows,
            "columns": len(pq.read_schema(train).names),
            "file_mib": {p.name: p.stat().st_size / 2**20 for p in (train, test)},
            "generate_seconds": generated,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "expected": expected_counts(),
            "settings": results,
        }
    finally:
        if args.keep:
            print(f"files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    exact = all(r["found"] == report["expected"] for r in report["settings"])
    report["planted_found_exactly"] = exact
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    if not exact:
        sys.exit(1)


def print_table(report: dict) -> None:
    print(
        f"check-large on {report['train_rows']:,} train x {report['test_rows']:,} test rows,"
        f" {report['columns']} columns (Parquet: "
        + ", ".join(f"{name} {mib:,.0f} MiB" for name, mib in report["file_mib"].items())
        + f"); generated in {report['generate_seconds']:.0f} s"
    )
    before, after = report["load_average_before"], report["load_average_after"]
    print(
        f"{report['threads']} DuckDB threads on {report['cpus']} CPUs; load average"
        f" (1/5/15 min) before {_load(before)}, after {_load(after)}"
    )
    for setting in report["settings"]:
        print(
            f"\n--memory-limit {setting['memory_limit']} --gx-chunk-rows"
            f" {setting['gx_chunk_rows']:,}"
        )
        header = f"{'phase':<22} {'rows':>12} {'time s':>8} {'rows/s':>12}"
        print(f"{header} {'RSS before':>11} {'peak RSS':>9}")
        for p in setting["phases"]:
            print(
                f"{p['phase']:<22} {p['rows']:>12,} {p['seconds']:>8.1f} {p['rows_per_s']:>12,.0f}"
                f" {p['rss_before_mib']:>7,.0f} MiB {p['peak_rss_mib']:>5,.0f} MiB"
            )
        total = sum(p["seconds"] for p in setting["phases"])
        peak = max(p["peak_rss_mib"] for p in setting["phases"])
        print(f"{'total':<22} {'':>12} {total:>8.1f} {'':>12} {'':>11} {peak:>5,.0f} MiB")
        wrong = {
            k: (v, setting["found"].get(k)) for k, v in report["expected"].items()
            if setting["found"].get(k) != v
        }  # fmt: skip
        extra = sorted(set(setting["found"]) - set(report["expected"]))
        verdict = "all found exactly" if not wrong and not extra else f"MISMATCH {wrong} {extra}"
        print(f"planted counts: {verdict}")


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
