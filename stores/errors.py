"""Errors raised by the stores package."""


class StoreError(Exception):
    """Base class of every error the stores package raises."""


class UnsafeStoreFile(StoreError):
    """A store file or its directory is a link, not a regular file, or not the user's own.

    Opening it would let whoever planted it redirect reads and writes to another
    file (a key, a dataset): refused before a byte is read or written.
    """


class InsecureSecretFile(UnsafeStoreFile):
    """A secret file (a private or data key) is readable or writable by other users."""


class DamagedTail(StoreError):
    """The end of a record file is damaged in a way no crash can leave; nothing is repaired."""


class StoreUnavailable(StoreError):
    """The database server could not be reached, or went away mid-session."""
