"""Errors raised by the privacy package."""


class PrivacyError(Exception):
    """Base class of every error the privacy package raises."""


class PrivacyInputError(PrivacyError):
    """A privacy parameter is invalid (exit code 2)."""


class BudgetExceeded(PrivacyError):
    """A run would spend more than the dataset's lifetime budget (exit code 1)."""


class EncryptionError(PrivacyError):
    """Sealed data could not be written or read."""


class EncryptionInputError(EncryptionError):
    """The key or file given is not usable: missing, malformed, or not the right one (exit 2)."""


class MissingKey(EncryptionInputError):
    """No data key was given where one is needed."""


class InvalidKey(EncryptionInputError):
    """A data key is malformed, or its key file is readable by other users."""


class WrongKey(EncryptionInputError):
    """The data key given is not the one the file was encrypted under."""


class UnsupportedFormat(EncryptionInputError):
    """Not a sealed file, a truncated one, or a format version this code cannot read."""


class TamperedCiphertext(EncryptionError):
    """Authentication failed: the sealed file was altered (exit 1, like a failed verification)."""
