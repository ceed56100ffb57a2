"""Privacy spends in the log, and the cross-check of the privacy ledger against them.

The shell logs every reservation the privacy ledger makes as a ``decision``
event with ``details.privacy_spend``. The log is the authoritative copy (it is
hash-chained and covered by signed checkpoints); the ledger is the fast index
the budget check reads. :func:`ledger_disagreements` checks that both agree run
by run, so a ledger file deleted, truncated or rolled back to hide spent budget
is reported, naming the dataset. The audits package does not import the
privacy package: the caller reads the ledger and passes its runs as
:class:`LedgerRunSteps`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from audits.errors import AuditError
from audits.log.audit_log import AuditLog
from audits.log.records import AuditEntry, Sha256Hex

_SPEND_MARKER = b'"privacy_spend"'


class MalformedSpend(AuditError):
    """A logged privacy spend does not parse: the writer, not the reader, is wrong."""


class PrivacySpend(BaseModel):
    """One reservation of DP-SGD steps, as the privacy ledger recorded it (cumulative steps)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset_sha256: Sha256Hex
    run_id: Annotated[str, Field(min_length=1, max_length=200)]
    noise_multiplier: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    sample_rate: Annotated[float, Field(gt=0, le=1)]
    steps: NonNegativeInt
    accountant: Annotated[str, Field(min_length=1)]
    delta: Annotated[float, Field(gt=0, lt=1)]


@dataclass(frozen=True, order=True)
class LedgerRunSteps:
    """One run's latest cumulative step count in the privacy ledger."""

    dataset_sha256: str
    run_id: str
    steps: int


def logged_privacy_spends(log: AuditLog, entries: int) -> Iterator[PrivacySpend]:
    """The privacy spends among the first ``entries`` entries (those verified), in log order.

    Only lines that mention a spend are parsed: on a log of a million entries,
    parsing every line would cost more than verifying it.
    """
    for _, line in log.search(_SPEND_MARKER, entries):
        spend = _spend_on(line)
        if spend is not None:
            yield spend


def ledger_disagreements(
    log: AuditLog, entries: int, ledger_runs: Iterable[LedgerRunSteps], ledger_path: Path
) -> list[str]:
    """One line per run whose steps in the ledger differ from the latest spend the log recorded.

    ``entries`` is how many entries verified; ``ledger_runs`` is every run the
    ledger at ``ledger_path`` holds (none if the file is missing).
    """
    logged: dict[tuple[str, str], int] = {}
    for spend in logged_privacy_spends(log, entries):
        run = (spend.dataset_sha256, spend.run_id)
        logged[run] = max(logged.get(run, 0), spend.steps)
    recorded = {(run.dataset_sha256, run.run_id): run.steps for run in ledger_runs}
    problems = []
    for dataset, run_id in sorted(logged.keys() | recorded.keys()):
        in_log, in_ledger = logged.get((dataset, run_id), 0), recorded.get((dataset, run_id), 0)
        if in_log == in_ledger:
            continue
        why = (
            "the ledger was deleted, truncated or rolled back"
            if in_ledger < in_log
            else "a reservation was not logged (a crash between ledger and log, or a forged ledger)"
        )
        problems.append(
            f"privacy ledger {ledger_path} disagrees with the audit log for dataset "
            f"{dataset}: run {run_id!r} has {in_log} steps in the log, "
            f"{in_ledger} in the ledger ({why})"
        )
    return problems


def _spend_on(line: bytes) -> PrivacySpend | None:
    # Uncovered entries count as verified (with a warning), so a line here may be forged.
    try:
        entry = AuditEntry.model_validate_json(line)
        spend = entry.event.details.get("privacy_spend")
        return None if spend is None else PrivacySpend.model_validate(spend)
    except ValidationError as exc:
        seq = json.loads(line).get("seq")
        raise MalformedSpend(
            f"entry {seq}: a privacy_spend event that does not parse: {exc.errors()[0]['msg']}"
        ) from exc
