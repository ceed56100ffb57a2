"""The leakage and duplicate checks on splits larger than memory: validate, hash, detect."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from governance.checks.config import CheckConfig
from governance.checks.findings import Finding, FindingType
from governance.checks.scan import worst_first
from governance.large.detectors import DETECTORS
from governance.large.engine import (
    SPLITS,
    Engine,
    LargeContext,
    duckdb_errors_named,
    hash_split,
    install_macros,
    make_plan,
)
from governance.large.limits import ScanLimits
from governance.large.sources import check_pair, locate, register

# What the out-of-core scan reports, in SPEC's order; the other types need
# whole columns or similarity indexes in memory.
SUPPORTED: tuple[FindingType, ...] = tuple(kind for kind in FindingType if kind in DETECTORS)
NOT_SUPPORTED: tuple[FindingType, ...] = tuple(k for k in FindingType if k not in DETECTORS)


def scan_large(
    train: Path, test: Path, config: CheckConfig, limits: ScanLimits | None = None
) -> list[Finding]:
    """Findings of the ``SUPPORTED`` types for two splits on disk, worst first.

    Memory is bounded by ``limits.memory_limit`` (DuckDB spills to disk beyond
    it) plus at most ``config.max_rows_listed + 1`` row numbers per list.
    Raises ``InputError`` naming the file and field for unusable inputs, or
    when DuckDB cannot finish within the limits.
    """
    limits = limits or ScanLimits()
    with duckdb_errors_named(limits), Engine(limits) as engine:
        return run_large_detectors(prepare_large(engine, train, test, config))


def prepare_large(engine: Engine, train: Path, test: Path, config: CheckConfig) -> LargeContext:
    """Check both splits, then hash each into its table (see ``engine``)."""
    sources = {
        split: locate(path, split) for split, path in zip(SPLITS, (train, test), strict=True)
    }
    check_pair(sources["train"], sources["test"], config)
    views = {split: f"{split}_source" for split in SPLITS}
    rows = {split: register(engine.con, sources[split], views[split]) for split in SPLITS}
    plan = make_plan(engine, sources, views, config)
    install_macros(engine, config.float_decimals)
    for split in SPLITS:
        hash_split(engine, plan, split, views[split])
    return LargeContext(engine, config, plan, sources, rows)


def run_large_detectors(
    ctx: LargeContext, kinds: tuple[FindingType, ...] = SUPPORTED
) -> list[Finding]:
    findings = []
    for kind in kinds:
        findings += run_one(ctx, DETECTORS[kind])
    return worst_first(findings)


def run_one(ctx: LargeContext, detector: Callable[[LargeContext], list[Finding]]) -> list[Finding]:
    """One detector, then its scratch tables dropped so the next one has the memory."""
    try:
        return detector(ctx)
    finally:
        for (name,) in ctx.engine.rows("SELECT table_name FROM duckdb_tables() WHERE temporary"):
            ctx.engine.con.execute(f'DROP TABLE IF EXISTS temp."{name}"')
