"""How much memory, how many threads and which scratch directory an out-of-core scan may use."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

# DuckDB's spelling: KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024.
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_UNIT_NAMES = ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)
# Below this DuckDB cannot hold the hash tables of even one operator.
MIN_MEMORY_BYTES = 16 * 1000**2


def parse_size(text: str) -> int:
    """Bytes in a size written as DuckDB writes it ("256MB", "1GB", "1.5GiB"); ValueError if not."""
    match = _SIZE.match(text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None:
        raise ValueError(
            f"{text!r} is not a size: give a number and a unit ({', '.join(_UNIT_NAMES)}),"
            " e.g. '256MB' or '1GB'"
        )
    return int(float(match.group(1)) * unit)


class ScanLimits(BaseModel):
    """Resources of one out-of-core scan.

    ``memory_limit`` bounds DuckDB's buffer pool (hash tables, sorts, cached
    blocks), which spills to ``temp_directory`` beyond it; Python's own memory
    (pyarrow batches for the GX suite, the findings) is bounded separately, by
    ``gx_chunk_rows``, ``sample_rows`` and ``CheckConfig.max_rows_listed``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_limit: str = "1GB"
    threads: Annotated[int, Field(ge=1, le=1024)] = Field(
        default_factory=lambda: os.cpu_count() or 1
    )
    # Scratch space for DuckDB's database file and spill files; a fresh
    # directory is made inside it per scan and removed afterwards.
    temp_directory: Path | None = None
    gx_chunk_rows: Annotated[int, Field(ge=1)] = 250_000
    # Rows per split loaded into memory for the sampled checks (governance.large.sample).
    sample_rows: Annotated[int, Field(ge=100)] = 20_000

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, value: str) -> str:
        size = parse_size(value)
        if size < MIN_MEMORY_BYTES:
            raise ValueError(f"{value!r} is below the minimum of 16MB")
        return "".join(value.split())

    @field_validator("temp_directory")
    @classmethod
    def _temp_directory(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory_limit)
