"""Verifying the project's audit log as ``custodian audit verify`` does: chain, signatures,
checkpoints (naming a revoked signer), and the privacy ledger cross-checked against it."""

from __future__ import annotations

from audits.errors import AuditError
from audits.log import (
    AuditLog,
    NoTrustedKeys,
    SignedCheckpoint,
    VerifyReport,
)
from audits.log.spends import LedgerRunSteps, ledger_disagreements
from audits.log.trusted import verify_trusted
from custodian.project import Project


class LogNotVerified(AuditError):
    """The audit log, its checkpoints or the privacy ledger failed verification (exit 1)."""


def verify_project_log(project: Project) -> str | None:
    """None if the project's audit log and privacy ledger verify, as `audit verify` checks them;
    else the first problem, in one line."""
    try:
        _, failure, _ = verify_log(project, project.audit_log())
    except NoTrustedKeys as exc:
        return str(exc)
    return failure


def verify_log(
    project: Project, log: AuditLog, anchor: SignedCheckpoint | None = None
) -> tuple[VerifyReport, str | None, list[str]]:
    """Verify ``log`` as ``custodian audit verify`` does: the report, the first failure
    (None if intact) and the privacy ledger's disagreements (checked for the project's log)."""
    report, failure = verify_trusted(log, project.local_trust_store(), anchor)
    ledger: list[str] = []
    if failure is None and report.first_problem is not None:
        failure = report.first_problem.message
    if failure is None and log.path.resolve() == project.audit_log_path.resolve():
        ledger = _check_privacy_ledger(project, log, report)
        failure = ledger[0] if ledger else None
    return report, failure, ledger


def _check_privacy_ledger(project: Project, log: AuditLog, report: VerifyReport) -> list[str]:
    """Each run's steps in the privacy ledger must equal the latest spend the log recorded."""
    # Imported here: the ledger pulls in Opacus and torch, seconds that no other command needs.
    from privacy.ledger import LedgerCorrupted, PrivacyLedger

    ledger = PrivacyLedger(project.privacy_ledger_path)
    try:
        runs = [
            LedgerRunSteps(dataset.dataset_sha256, run.run_id, run.steps)
            for dataset in ledger.summary()
            for run in dataset.runs
        ]
    except LedgerCorrupted as exc:
        return [f"privacy ledger {exc}"]
    return ledger_disagreements(log, report.entries, runs, ledger.path)
