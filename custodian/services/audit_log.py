"""Verifying the project's audit log as ``custodian audit verify`` does: chain, signatures,
checkpoints (naming a revoked signer), and the privacy ledger cross-checked against it."""

from __future__ import annotations

from dataclasses import dataclass

from audits.errors import AuditError
from audits.log import (
    AuditLog,
    NoTrustedKeys,
    ProblemKind,
    SignedCheckpoint,
    VerifyReport,
)
from audits.trust import TrustStore
from custodian.project import Project
from custodian.services import trail


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
    report, failure = _verify_signed(log, project.local_trust_store(), anchor)
    ledger: list[str] = []
    if failure is None and report.first_problem is not None:
        failure = report.first_problem.message
    if failure is None and log.path.resolve() == project.audit_log_path.resolve():
        ledger = _check_privacy_ledger(project, log, report)
        failure = ledger[0] if ledger else None
    return report, failure, ledger


def _verify_signed(
    log: AuditLog, store: TrustStore, anchor: SignedCheckpoint | None
) -> tuple[VerifyReport, str | None]:
    """Verify against the trusted keys, and name a revoked key if one signed checkpoints.

    To the log, a revoked key is just an unknown one; only when that is the
    complaint (or no key is trusted at all) is it worth a second pass with the
    revoked keys let in, to tell the reviewer which key and why.
    """
    trusted = store.trusted_keys()
    report = log.verify(trusted, against=anchor) if trusted else None
    suspicious = report is None or ProblemKind.UNKNOWN_KEY in _kinds(report)
    revoked = store.revoked() if suspicious else []
    if revoked:
        again = log.verify([*trusted, *(key for _, key in revoked)], against=anchor)
        if ProblemKind.UNKNOWN_KEY not in _kinds(again) and (
            report is not None or again.checkpoint is not None
        ):
            signer = again.checkpoint.key_fingerprint if again.checkpoint else None
            entry = next((e for e, _ in revoked if e.fingerprint == signer), revoked[0][0])
            return again, (
                f"checkpoints are signed by revoked key {entry.name!r} "
                f"({entry.fingerprint[:16]}...), revoked {entry.revoked_at:%Y-%m-%d %H:%M:%S} "
                f"UTC: {entry.revoked_reason}"
            )
    if report is None:
        raise NoTrustedKeys(
            f"the trust store {store.directory} trusts no key (none added, or all revoked)"
        )
    return report, None


def _kinds(report: VerifyReport) -> set[ProblemKind]:
    return {problem.kind for problem in report.problems}


@dataclass(frozen=True)
class _Run:
    dataset_sha256: str
    run_id: str


def _check_privacy_ledger(project: Project, log: AuditLog, report: VerifyReport) -> list[str]:
    """Each run's steps in the privacy ledger must equal the latest spend the log recorded."""
    # Imported here: the ledger pulls in Opacus and torch, seconds that no other command needs.
    from privacy.ledger import LedgerCorrupted, PrivacyLedger

    logged: dict[_Run, int] = {}
    for spend in trail.logged_privacy_spends(log, report.entries):
        run = _Run(spend.dataset_sha256, spend.run_id)
        logged[run] = max(logged.get(run, 0), spend.steps)
    ledger = PrivacyLedger(project.privacy_ledger_path)
    if not logged and not ledger.path.exists():
        return []
    try:
        ledger.verify()
    except LedgerCorrupted as exc:
        return [f"privacy ledger {exc}"]
    recorded = {
        _Run(dataset.dataset_sha256, run.run_id): run.steps
        for dataset in ledger.summary()
        for run in dataset.runs
    }
    problems = []
    for run in sorted(logged.keys() | recorded.keys(), key=lambda r: (r.dataset_sha256, r.run_id)):
        in_log, in_ledger = logged.get(run, 0), recorded.get(run, 0)
        if in_log == in_ledger:
            continue
        why = (
            "the ledger was deleted, truncated or rolled back"
            if in_ledger < in_log
            else "a reservation was not logged (a crash between ledger and log, or a forged ledger)"
        )
        problems.append(
            f"privacy ledger {ledger.path} disagrees with the audit log for dataset "
            f"{run.dataset_sha256}: run {run.run_id!r} has {in_log} steps in the log, "
            f"{in_ledger} in the ledger ({why})"
        )
    return problems
