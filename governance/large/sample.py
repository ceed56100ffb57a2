"""The checks that need whole columns in memory, run on a bounded sample of each split.

Target leakage (single columns and the boosted-tree model), proxies and PII
judge how values relate or look, not whether particular rows match, so a
random sample answers them: DuckDB draws at most ``ScanLimits.sample_rows``
rows per split (a reservoir sample, repeatable by ``config.seed``), and the
in-memory detectors run on those frames. Row numbers in the findings are
positions in the files; counts and shares are of the sample, which each
finding's detail says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from governance.checks.config import CheckConfig
from governance.checks.findings import Finding, FindingType
from governance.checks.registry import DETECTORS as IN_MEMORY
from governance.checks.scan import prepare_scan
from governance.large.engine import SPLITS, Engine, duckdb_errors_named
from governance.large.limits import ScanLimits
from governance.large.sources import ROW, check_pair, locate, register
from governance.large.sql import ident

# In SPEC's order, like the out-of-core types.
SAMPLED: tuple[FindingType, ...] = (FindingType.target_leakage, FindingType.proxy, FindingType.pii)


def scan_sampled(
    train: Path, test: Path, config: CheckConfig, limits: ScanLimits | None = None
) -> list[Finding]:
    """Findings of the ``SAMPLED`` types on at most ``limits.sample_rows`` rows per split."""
    limits = limits or ScanLimits()
    with duckdb_errors_named(limits), Engine(limits) as engine:
        sources = {s: locate(p, s) for s, p in zip(SPLITS, (train, test), strict=True)}
        check_pair(sources["train"], sources["test"], config)
        frames, positions = {}, {}
        for split in SPLITS:
            view = f"{split}_source"
            rows = register(engine.con, sources[split], view)
            sample = (
                f" USING SAMPLE reservoir({limits.sample_rows} ROWS) REPEATABLE ({config.seed})"
                if rows > limits.sample_rows
                else ""
            )
            frame = engine.con.execute(f"SELECT * FROM {ident(view)}{sample}").df()
            frame = frame.sort_values(ROW, kind="stable").reset_index(drop=True)
            positions[split] = frame.pop(ROW).to_numpy(dtype=np.int64)
            frames[split] = frame
    ctx = prepare_scan(frames["train"], frames["test"], config=config)
    note = _sample_note(frames["train"], frames["test"], limits.sample_rows)
    return [
        _in_files(finding, positions, note) for kind in SAMPLED for finding in IN_MEMORY[kind](ctx)
    ]


def _sample_note(train: pd.DataFrame, test: pd.DataFrame, limit: int) -> str:
    return (
        f" (out of core: on a random sample of {len(train):,} train and {len(test):,} test"
        f" rows, at most {limit:,} per split)"
    )


def _in_files(finding: Finding, positions: dict[str, np.ndarray], note: str) -> Finding:
    """The finding with sample positions turned into file positions and the sample named."""
    return Finding.model_validate(
        {
            **finding.model_dump(),
            "train_rows": tuple(int(positions["train"][r]) for r in finding.train_rows),
            "test_rows": tuple(int(positions["test"][r]) for r in finding.test_rows),
            "detail": finding.detail.removesuffix(".") + note + ".",
        }
    )
