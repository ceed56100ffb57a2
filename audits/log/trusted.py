"""Verifying the log against a trust store: its trusted keys, and naming a revoked signer."""

from __future__ import annotations

from audits.log.audit_log import AuditLog
from audits.log.errors import NoTrustedKeys
from audits.log.records import ProblemKind, SignedCheckpoint, VerifyReport
from audits.trust import TrustStore


def verify_trusted(
    log: AuditLog, store: TrustStore, anchor: SignedCheckpoint | None = None
) -> tuple[VerifyReport, str | None]:
    """Verify against the store's trusted keys; the report, and the failure that names a revoked
    signer (None when no revoked key explains the report).

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
            f"the trust store {store.where} trusts no key (none added, or all revoked)"
        )
    return report, None


def _kinds(report: VerifyReport) -> set[ProblemKind]:
    return {problem.kind for problem in report.problems}
