"""Errors raised by the audits package."""


class AuditError(Exception):
    """Base class of every error the audits package raises."""
