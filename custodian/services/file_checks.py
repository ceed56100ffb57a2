"""Leakage and contamination checks on files named on the command line (not a stage).

``custodian check --train A --test B`` scans any two files with the column roles
the user gives; the pipeline's own check stage is :mod:`custodian.stages.check`.
Both refuse the same way: :func:`require_no_blocking`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from custodian.outputs import FileChecks, blocking
from custodian.services.datasets import read_table, table_name
from governance.checks import CheckConfig, Finding, FindingType, scan
from governance.checks.scan import alignment
from governance.errors import CheckFailed, InputError
from governance.registry import format_validation_error


def check_files(
    train: Path,
    test: Path,
    references: tuple[Path, ...],
    *,
    label: str | None,
    id_column: str | None,
    time_column: str | None,
    sensitive: tuple[str, ...],
) -> FileChecks:
    """Findings of ``train`` against ``test`` and ``references``, under the roles given."""
    try:
        config = CheckConfig(
            label=label,
            id_column=id_column,
            time_column=time_column,
            sensitive_columns=sensitive,
        )
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="check")) from None
    tables = {table_name(path): read_table(path) for path in references}
    frames = read_table(train), read_table(test)
    try:
        findings = scan(*frames, tables, config=config)
    except InputError as err:
        # The scan names frames by role; the user named files.
        raise InputError(f"--train {train}, --test {test}: {err}") from None
    return FileChecks(
        train=str(train),
        test=str(test),
        findings=findings,
        waived={},
        not_compared=alignment(*frames, tables, config),
    )


def require_no_blocking(
    findings: list[Finding], waived: dict[FindingType, str], out: Path | None
) -> None:
    """CheckFailed naming the kinds of critical findings no waiver lets through."""
    stopping = blocking(findings, waived)
    if stopping:
        kinds = sorted({f.type.value for f in stopping})
        raise CheckFailed(
            f"{len(stopping)} critical finding(s): {', '.join(kinds)}"
            + (f"; see {out}" if out else "")
        )
