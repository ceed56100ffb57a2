"""Errors raised by the privacy package."""


class PrivacyError(Exception):
    """Base class of every error the privacy package raises."""


class PrivacyInputError(PrivacyError):
    """A privacy parameter is invalid (exit code 2)."""


class BudgetExceeded(PrivacyError):
    """A run would spend more than the dataset's lifetime budget (exit code 1)."""
