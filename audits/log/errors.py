"""Errors of the audit log."""

from __future__ import annotations

from audits.errors import AuditError


class TamperDetected(AuditError):
    """The log or its checkpoint is not what was written; the writer refuses to go on."""


class UntrustedCheckpoint(TamperDetected):
    """The existing checkpoint is not signed by a key the writer trusts."""


class CheckpointFormatError(AuditError):
    """A checkpoint file cannot be parsed."""


class NoCheckpoint(AuditError):
    """No signed checkpoint has been written yet."""


class NoTrustedKeys(AuditError):
    """Verification was asked to trust no key at all; it would prove nothing."""


class LogFormatError(AuditError):
    """An entry of the log does not parse into an :class:`AuditEntry`."""


class NewTreeRefused(TamperDetected):
    """A new signed tree would start over history (or over a deleted log a checkpoint witnessed);
    only a person's explicit adoption may do that."""
