"""Benchmark: this tree's scan against another git revision's, side by side in one process.

Run: ``python bench/compare_checks.py [--ref main] [--rounds 3] [--train-rows N] [--test-rows N]``

The machine may be shared, so the two scans are timed alternately in the same
process on the same frames (``bench_checks``'s planted data), round after
round; the ratio of medians, and the spread of each variant's rounds, say
how much of a difference is noise. The other revision's ``governance``
package is extracted with ``git archive`` into a temporary directory and
imported beside this tree's (each keeps its own modules). Its findings must
equal this tree's, finding by finding, rows included; exit 1 if not.
Peak memory per variant is traced with ``tracemalloc`` in a last round.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_checks  # noqa: E402


def import_revision(ref: str, into: Path) -> ModuleType:
    """``governance.checks.scan`` as of ``ref``, imported without disturbing this tree's."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "governance"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    ours = {name: module for name, module in sys.modules.items() if _is_governance(name)}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(into))
    try:
        theirs = importlib.import_module("governance.checks.scan")
    finally:
        sys.path.remove(str(into))
        for name in [n for n in sys.modules if _is_governance(n)]:
            del sys.modules[name]
        sys.modules.update(ours)
    return theirs


def _is_governance(name: str) -> bool:
    return name == "governance" or name.startswith("governance.")


def _run(scan_module: ModuleType, data: tuple) -> tuple[float, float, list]:
    train, test, references = data
    config = scan_module.CheckConfig(**bench_checks.CONFIG.model_dump())
    wall, cpu = time.perf_counter(), time.process_time()
    findings = scan_module.scan(train, test, references, config=config)
    return time.perf_counter() - wall, time.process_time() - cpu, findings


def _traced_peak(scan_module: ModuleType, data: tuple) -> float:
    tracemalloc.start()
    _run(scan_module, data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    args = parser.parse_args()

    ours = importlib.import_module("governance.checks.scan")
    with tempfile.TemporaryDirectory() as scratch:
        theirs = import_revision(args.ref, Path(scratch))
    data = bench_checks.make_data(args.train_rows, args.test_rows)
    variants = {args.ref: theirs, "this tree": ours}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    findings = {}
    for _ in range(args.rounds):
        for name, module in variants.items():
            wall, cpu, found = _run(module, data)
            times[name].append((wall, cpu))
            findings[name] = [f.model_dump(mode="json") for f in found]
    print(f"{args.train_rows:,} train x {args.test_rows:,} test rows, {args.rounds} rounds each")
    print(f"{'variant':<12} {'wall s (median, min-max)':>28} {'CPU s (median, min-max)':>28}")
    medians = {}
    for name, rounds in times.items():
        walls, cpus = [w for w, _ in rounds], [c for _, c in rounds]
        medians[name] = (statistics.median(walls), statistics.median(cpus))
        print(
            f"{name:<12} {medians[name][0]:>10.2f} ({min(walls):.2f}-{max(walls):.2f})"
            f"{'':>8}{medians[name][1]:>10.2f} ({min(cpus):.2f}-{max(cpus):.2f})"
        )
    base, new = medians[args.ref], medians["this tree"]
    print(
        f"ratio {args.ref} / this tree: wall {base[0] / new[0]:.2f}x, CPU {base[1] / new[1]:.2f}x"
    )
    peaks = {name: _traced_peak(module, data) for name, module in variants.items()}
    print(
        "traced peak (tracemalloc, Python and numpy allocations): "
        + ", ".join(f"{name} {peak:,.0f} MiB" for name, peak in peaks.items())
    )
    same = findings[args.ref] == findings["this tree"]
    print(f"findings identical, rows included: {same}")
    if not same:
        _print_differences(findings[args.ref], findings["this tree"])
        sys.exit(1)


def _print_differences(theirs: list[dict], ours: list[dict]) -> None:
    if len(theirs) != len(ours):
        print(f"  {len(theirs)} findings against {len(ours)}")
    for old, new in zip(theirs, ours, strict=False):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                a, b = old.get(key), new.get(key)
                if isinstance(a, list) and isinstance(b, list):
                    gone, added = (
                        sorted(set(map(str, a)) - set(map(str, b)))[:10],
                        sorted(set(map(str, b)) - set(map(str, a)))[:10],
                    )
                    shown = f"only in theirs {gone}, only in ours {added} (first 10 each)"
                else:
                    shown = f"{str(a)[:200]!r} -> {str(b)[:200]!r}"
                print(f"  {old.get('type')} {old.get('columns')}: {key}: {shown}")


if __name__ == "__main__":
    main()
