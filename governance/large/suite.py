"""A dataset's GX schema suite over a file larger than memory, chunk by chunk.

The suite is ``governance.expectations.schema_suite(record)``, unchanged.
Expectations about single rows (types, nulls, ranges, categories, the
column list) run with real Great Expectations on each chunk of
``gx_chunk_rows`` rows (Parquet record batches; DuckDB batches for CSV), and
their unexpected counts are summed over the chunks. The expectations no chunk
can answer alone run over the whole file in DuckDB instead: the row count,
and uniqueness of the identifier (or of identifier and time together) with
GX's semantics (missing values ignored; for the compound key, rows missing
every value ignored; every row of a repeated value counted).

It fails closed: an expectation that fails, or raises, in any chunk fails the suite.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from governance.errors import InputError
from governance.expectations import FailedExpectation, SuiteOutcome, schema_suite
from governance.large.engine import Engine, duckdb_errors_named, is_numeric_type
from governance.large.limits import ScanLimits
from governance.large.sources import Source, SourceFormat, column_types, locate, register
from governance.large.sql import ident
from governance.provenance import Provenance

_WHOLE_FILE = (
    gxe.ExpectTableRowCountToEqual,
    gxe.ExpectColumnValuesToBeUnique,
    gxe.ExpectCompoundColumnsToBeUnique,
)


@dataclass
class _Tally:
    """One expectation's result so far, over the chunks seen."""

    expectation: Any
    success: bool = True
    unexpected: int | None = None
    chunks: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, success: bool, unexpected: int | None) -> None:
        self.chunks += 1
        self.success = self.success and success
        if unexpected is not None:
            self.unexpected = (self.unexpected or 0) + int(unexpected)


def schema_suite_large(
    path: Path, record: Provenance, limits: ScanLimits | None = None
) -> SuiteOutcome:
    """Validate the file(s) at ``path`` against ``record``'s schema suite in bounded memory."""
    limits = limits or ScanLimits()
    source = locate(path, record.name)
    context = _context()  # GX builds suites only inside an active context
    suite = schema_suite(record)
    tallies = [_Tally(e) for e in suite.expectations]
    per_chunk = [t for t in tallies if not isinstance(t.expectation, _WHOLE_FILE)]
    validation = _chunk_validation(context, record, [t.expectation for t in per_chunk])

    def validate(chunks: Iterator[pd.DataFrame]) -> None:
        for chunk in chunks:
            result = validation.run(batch_parameters={"dataframe": chunk}, result_format="SUMMARY")
            for tally, outcome in zip(per_chunk, result.results, strict=True):
                tally.add(bool(outcome.success), (outcome.result or {}).get("unexpected_count"))

    with duckdb_errors_named(limits), Engine(limits) as engine:
        rows = register(engine.con, source, "suite_source")
        for tally in tallies:
            if isinstance(tally.expectation, _WHOLE_FILE):
                _whole_file(engine, source, tally, rows)
        if source.format is SourceFormat.csv:  # chunks of DuckDB's copy of the file
            validate(_chunks(_csv_batches(engine, source, limits.gx_chunk_rows)))
    if source.format is SourceFormat.parquet:  # DuckDB's memory is released by now
        try:
            validate(_chunks(_parquet_batches(source.files, limits.gx_chunk_rows)))
        except pa.ArrowException as err:
            raise InputError(f"{path}: cannot read in batches ({err})") from None
    failed = [
        FailedExpectation(
            expectation=t.expectation.expectation_type,
            column=getattr(t.expectation, "column", None),
            unexpected_count=t.unexpected,
        )
        for t in tallies
        if not (t.success and t.chunks)
    ]
    return SuiteOutcome(
        dataset=record.name,
        suite=suite.name,
        success=not failed,
        evaluated=len(tallies),
        successful=len(tallies) - len(failed),
        failed=failed,
    )


def _whole_file(engine: Engine, source: Source, tally: _Tally, rows: int) -> None:
    expectation = tally.expectation
    if isinstance(expectation, gxe.ExpectTableRowCountToEqual):
        tally.add(rows == expectation.value, None)
        return
    columns = (
        [expectation.column]
        if isinstance(expectation, gxe.ExpectColumnValuesToBeUnique)
        else list(expectation.column_list)
    )
    if any(c not in source.columns for c in columns):
        tally.add(False, None)  # the column-list expectation names what is missing
        return
    types = column_types(engine.con, "suite_source")
    missing = [
        f"({ident(c)} IS NULL"
        + (f" OR isnan(CAST({ident(c)} AS DOUBLE)))" if is_numeric_type(types[c]) else ")")
        for c in columns
    ]
    # GX ignores a missing value, and a compound row only when every value is missing.
    keep = (
        " AND ".join(f"NOT {m}" for m in missing)
        if len(columns) == 1
        else ("NOT (" + " AND ".join(missing) + ")")
    )
    keys = ", ".join(ident(c) for c in columns)
    repeated = engine.value(
        f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM suite_source"
        f" WHERE {keep} GROUP BY {keys} HAVING count(*) > 1)"
    )
    tally.add(repeated == 0, int(repeated or 0))


def _context() -> Any:
    """A throwaway in-memory GX context: no files, no analytics, no progress bars."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )


def _chunk_validation(
    context: Any, record: Provenance, expectations: list[Any]
) -> gx.ValidationDefinition:
    """A validation definition of the per-row expectations, run once per chunk."""
    batch = (
        context.data_sources.add_pandas("custodian-large")
        .add_dataframe_asset(record.name)
        .add_batch_definition_whole_dataframe("chunk")
    )
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=f"{record.name}.schema.chunk",
            expectations=[e.copy(update={"id": None}) for e in expectations],
        )
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{record.name}.schema.chunk", data=batch, suite=suite)
    )


def _chunks(batches: pa.RecordBatchReader) -> Iterator[pd.DataFrame]:
    """The batches as pandas frames; one empty frame if there are no rows."""
    seen = False
    for batch in batches:
        if batch.num_rows:
            seen = True
            yield _widened(batch).to_pandas()
    if not seen:
        yield _widened(pa.RecordBatch.from_pylist([], schema=batches.schema)).to_pandas()


def _csv_batches(engine: Engine, source: Source, rows: int) -> pa.RecordBatchReader:
    """DuckDB's copy of a CSV file, in no particular order: per-chunk expectations are per row."""
    columns = ", ".join(ident(c) for c in source.columns)
    return engine.con.sql(f"SELECT {columns} FROM suite_source").to_arrow_reader(rows)


def _parquet_batches(files: tuple[Path, ...], rows: int) -> pa.RecordBatchReader:
    """Record batches decoded a row group at a time.

    pyarrow's default pre-buffering reads every row group's bytes up front
    (a whole file in memory); without it, memory is about one row group.
    """
    schema = pq.read_schema(files[0])

    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            with pq.ParquetFile(file, pre_buffer=False) as parquet:
                yield from parquet.iter_batches(batch_size=rows)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _widened(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Narrow Parquet integers and floats widened to int64/float64, as reading a CSV gives."""
    arrays = []
    for array in batch.columns:
        kind = array.type
        if pa.types.is_integer(kind) and kind != pa.int64() and kind != pa.uint64():
            array = pc.cast(array, pa.int64())
        elif pa.types.is_floating(kind) and kind != pa.float64():
            array = pc.cast(array, pa.float64())
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
