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
from audits.witness import witness_problems, witnesses
from custodian.project import Project


class LogNotVerified(AuditError):
    """The audit log, its checkpoints or the privacy ledger failed verification (exit 1)."""


def verify_project_log(project: Project) -> str | None:
    """None if the project's audit log and privacy ledger verify, as `audit verify` checks them;
    else the first problem, in one line."""
    try:
        # The witnessed heads are the release gate's own reason (log_not_extending_checkpoint).
        _, failure, _ = verify_log(project, project.audit_log(), witnessed=False)
    except NoTrustedKeys as exc:
        return str(exc)
    return failure


def verify_log(
    project: Project,
    log: AuditLog,
    anchor: SignedCheckpoint | None = None,
    *,
    witnessed: bool = True,
) -> tuple[VerifyReport, str | None, list[str]]:
    """Verify ``log`` as ``custodian audit verify`` does: the report, the first failure
    (None if intact) and the privacy ledger's disagreements (checked for the project's log)."""
    report, failure = verify_trusted(log, project.local_trust_store(), anchor)
    ledger: list[str] = []
    if failure is None and report.first_problem is not None:
        failure = report.first_problem.message
    own = log.path.resolve() == project.audit_log_path.resolve()
    if failure is None and own:
        ledger = _check_privacy_ledger(project, log, report)
        failure = ledger[0] if ledger else None
    if failure is None and own and witnessed:
        problems = witness_failures(project)
        failure = problems[0] if problems else None
    return report, failure, ledger


def witness_failures(project: Project) -> list[str]:
    """One line per log head a committed sign-off witnessed that the project's log does not
    extend: a deleted, truncated or rewritten log shows here (see audits.witness)."""
    witnessed = witnesses(project.signoff_files(), project.people_keys()[0])
    keys = project.local_trust_store().trusted_keys()
    if witnessed and not keys:
        return [
            f"{len(witnessed)} sign-off(s) witnessed the audit log, but no pipeline key is "
            f"trusted to check it against them (was .custodian/ deleted?)"
        ]
    return witness_problems(project.audit_log(), keys, witnessed)


def _check_privacy_ledger(project: Project, log: AuditLog, report: VerifyReport) -> list[str]:
    """Each run's steps in the privacy ledger must equal the latest spend the log recorded."""
    # Imported here: the ledger pulls in Opacus and torch, seconds that no other command needs.
    from privacy.ledger import LedgerCorrupted, PrivacyLedger

    ledger = PrivacyLedger(project.privacy_ledger_path)
    try:
        runs = [
            LedgerRunSteps(run.dataset_sha256, run.run_id, run.steps)
            for dataset in ledger.summary()
            for run in dataset.runs
        ]
    except LedgerCorrupted as exc:
        return [f"privacy ledger {exc}"]
    return ledger_disagreements(log, report.entries, runs, ledger.path)
