"""The leakage and duplicate checks on splits larger than memory.

The splits are read from disk by DuckDB under a memory limit (spilling to a
scratch directory beyond it), never loaded whole; the findings have the same
form as ``custodian check``'s. With ``--schema`` / ``--test-schema`` the
dataset's GX schema suite also runs over the file, chunk by chunk.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import ValidationError

from custodian.services.datasets import load_record
from governance.checks import CheckConfig, Severity
from governance.checks.scan import worst_first
from governance.errors import CheckFailed, InputError
from governance.large import SAMPLED, SKIPPED, ScanLimits, scan_large, scan_sampled
from governance.registry import format_validation_error


def check_large(
    train: Path,
    test: Path,
    *,
    label: str | None,
    id_column: str | None,
    time_column: str | None,
    exclude: tuple[str, ...],
    schema: Path | None,
    test_schema: Path | None,
    memory_limit: str,
    threads: int | None,
    temp_dir: Path | None,
    gx_chunk_rows: int,
) -> dict:
    """The out-of-core findings of ``train`` against ``test``, and the schema suites asked for."""
    try:
        config = CheckConfig(
            label=label, id_column=id_column, time_column=time_column, exclude_columns=exclude
        )
        limits = ScanLimits(
            memory_limit=memory_limit,
            temp_directory=temp_dir,
            gx_chunk_rows=gx_chunk_rows,
            **({"threads": threads} if threads is not None else {}),
        )
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="check-large")) from None
    records = {
        split: load_record(path)
        for split, path in (("train", schema), ("test", test_schema))
        if path is not None
    }
    findings = worst_first(
        [*scan_large(train, test, config, limits), *scan_sampled(train, test, config, limits)]
    )
    report: dict = {
        "train": str(train),
        "test": str(test),
        "findings": [f.model_dump(mode="json") for f in findings],
        "sampled": {"types": [str(k) for k in SAMPLED], "rows_per_split": limits.sample_rows},
        "not_checked": [str(kind) for kind in SKIPPED],
        "limits": limits.model_dump(mode="json"),
    }
    if records:
        # GX takes seconds to import; only a run with a schema pays for it.
        from governance.large.suite import schema_suite_large

        paths = {"train": train, "test": test}
        report["expectations"] = {
            split: dataclasses.asdict(schema_suite_large(paths[split], record, limits))
            for split, record in records.items()
        }
    return report


def require_passed(report: dict, out: Path | None) -> None:
    """CheckFailed on a critical finding or a failed schema suite, naming each."""
    problems = []
    critical = [f for f in report["findings"] if f["severity"] == Severity.critical]
    if critical:
        kinds = sorted({f["type"] for f in critical})
        problems.append(f"{len(critical)} critical finding(s): {', '.join(kinds)}")
    failed = [s for s, o in report.get("expectations", {}).items() if not o["success"]]
    if failed:
        problems.append(f"schema suite failed on {', '.join(failed)}")
    if problems:
        raise CheckFailed("; ".join(problems) + (f"; see {out}" if out else ""))
