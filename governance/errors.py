"""Errors raised by the governance package.

The CLI maps ``InputError`` to exit code 2 and ``PolicyViolation`` /
``CheckFailed`` to exit code 1.
"""


class GovernanceError(Exception):
    """Base class of every error the governance package raises."""


class InputError(GovernanceError):
    """A user-supplied file, field or argument is missing or invalid."""


class PolicyViolation(GovernanceError):
    """Input is well-formed but a governance policy (e.g. license) forbids it."""


class CheckFailed(GovernanceError):
    """A data check found a critical, unwaived problem."""
