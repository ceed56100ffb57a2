"""The validate stage: Great Expectations suites for every ingested dataset, with Data Docs.

A failing suite is waived only by ``validate.waivers`` in params.yaml; an unwaived
failure fails the stage (:func:`require_passed`) after the report is written.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from audits.files import atomic_directory
from custodian.outputs import ValidationReport
from custodian.params import ValidateParams
from custodian.services.datasets import load_ingested
from governance.errors import CheckFailed
from governance.expectations import run_suites


def run(
    params: ValidateParams, ingested: Path, gx_dir: Path, docs: Path, out: Path
) -> ValidationReport:
    """Run every dataset's suite from the GX template ``gx_dir``; write ``out`` and ``docs``."""
    datasets = load_ingested(ingested)
    with (
        tempfile.TemporaryDirectory(prefix="custodian-gx-") as work,
        atomic_directory(docs) as staging_docs,
    ):
        outcomes = run_suites(gx_dir, Path(work), staging_docs, datasets)
    failing = [o for o in outcomes if not o.success]
    report = ValidationReport(
        success=all(o.success or o.dataset in params.waivers for o in outcomes),
        suites=[asdict(o) for o in outcomes],
        waived={
            o.dataset: params.waivers[o.dataset] for o in failing if o.dataset in params.waivers
        },
    )
    report.write(out)
    return report


def require_passed(report: ValidationReport, out: Path, docs: Path) -> None:
    """CheckFailed naming the unwaived failing suites and the first failed expectation."""
    unwaived = [s for s in report.suites if not s.success and s.dataset not in report.waived]
    if not unwaived:
        return
    first = unwaived[0].failed[0] if unwaived[0].failed else None
    detail = f" ({first.expectation} on {first.column})" if first else ""
    raise CheckFailed(
        f"validation failed for {', '.join(s.suite for s in unwaived)}{detail}; "
        f"see {out} and {docs / 'index.html'}"
    )
