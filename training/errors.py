"""Errors raised by the training package."""


class TrainingError(Exception):
    """Base class of every error the training package raises."""


class TrainingInputError(TrainingError):
    """Training data or configuration is invalid (exit code 2)."""
