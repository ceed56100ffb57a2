"""Opening store files: never through a link, only regular files the user owns.

A store file (the audit log, its checkpoints and their history, the privacy
ledger, trust store files, key files, bytes set aside from a torn tail) is
opened with ``O_NOFOLLOW`` and checked on the open descriptor (``fstat``), so a
link or another kind of file swapped in between a check and the open cannot be
used: someone who can write the project could otherwise point ``log.jsonl`` at
a victim's key and have the next command copy or truncate it. ``O_NONBLOCK``
keeps a FIFO planted in a file's place from hanging the open. The directory
holding a store file is checked too (``lstat``): not a link, a directory, the
user's own.

A file written by :func:`create_private_file` is new (``O_EXCL``), mode 0600
whatever the umask, and on disk (file and directory entry) before it returns.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from stores.errors import InsecureSecretFile, UnsafeStoreFile

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# O_NOFOLLOW refuses a link as the last component; O_NONBLOCK stops a FIFO from blocking.
_SAFE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ_CHUNK = 1 << 20


def open_store_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """A descriptor of the regular file ``path``, owned by the user; the caller closes it.

    :class:`UnsafeStoreFile` if ``path`` or its directory is a link, another kind of
    file, or someone else's. A missing file raises :class:`FileNotFoundError` as
    ``os.open`` does (unless ``flags`` create it).
    """
    check_store_directory(path.parent)
    try:
        fd = os.open(path, flags | _SAFE_FLAGS, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        cause = _cause(path, exc)
        if cause is None:
            raise
        raise UnsafeStoreFile(f"{path}: {cause}; refusing to open it") from None
    try:
        _check_descriptor(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_store_file(path: Path) -> bytes | None:
    """The bytes of the store file ``path``, or None if it does not exist."""
    try:
        fd = open_store_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def read_secret_file(path: Path) -> bytes:
    """The bytes of a secret (key) file that only its owner may read or write.

    A file open to group or others is refused (:class:`InsecureSecretFile`), as
    ssh refuses such a key: a key that others could have copied proves nothing.
    """
    fd = open_store_file(path, os.O_RDONLY)
    try:
        mode = os.fstat(fd).st_mode
        if mode & 0o077:
            raise InsecureSecretFile(
                f"{path}: is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        return read_all(fd)
    finally:
        os.close(fd)


def create_private_file(path: Path, data: bytes) -> None:
    """Publish ``data`` as the new file ``path``, mode 0600; FileExistsError if it is taken.

    The file appears complete or not at all, and on disk (file and directory
    entry): it is written under a temporary name and linked into place, and
    ``link`` (unlike ``rename``) refuses to replace anything already there, a
    link included, so two writers never overwrite each other.
    """
    check_store_directory(path.parent)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE_FLAGS, PRIVATE_FILE_MODE)
    try:
        try:
            # The creation mode is filtered by the umask; say exactly what we mean.
            os.fchmod(fd, PRIVATE_FILE_MODE)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def make_private_directory(directory: Path) -> None:
    """Create ``directory`` (and its parents) for secrets: mode 0700. An existing one is checked,
    not changed: it belongs to its owner, and the files' own modes protect what is in it."""
    check_store_directory(directory)
    if directory.is_dir():
        return
    directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; say exactly what we mean.
    os.chmod(directory, PRIVATE_DIR_MODE)


def check_store_directory(directory: Path) -> None:
    """Refuse a store directory that is a link, not a directory, or not the user's own.

    A directory that does not exist yet passes: it is created by the writer, not followed.
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeStoreFile(
            f"{directory}: is a symbolic link; store directories are never followed"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeStoreFile(f"{directory}: is {_kind(info.st_mode)}, not a directory")
    if info.st_uid != os.geteuid():
        raise UnsafeStoreFile(_not_owned(directory, info.st_uid))


def read_all(fd: int) -> bytes:
    """Everything from the descriptor's position to its end."""
    chunks = []
    while chunk := os.read(fd, _READ_CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: with ``O_APPEND`` and a lock held, one record write lands whole."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(directory: Path) -> None:
    """Make a new or renamed directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_descriptor(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeStoreFile(f"{path}: is {_kind(info.st_mode)}, not a regular file")
    if info.st_uid != os.geteuid():
        raise UnsafeStoreFile(_not_owned(path, info.st_uid))


def _cause(path: Path, exc: OSError) -> str | None:
    """Why opening ``path`` failed, when it is what the file is rather than an I/O error."""
    if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EWOULDBLOCK):
        return None
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return "is a symbolic link; store files are never opened through a link"
    return f"is {_kind(mode)}, not a regular file"


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISREG, "a regular file"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _not_owned(path: Path, uid: int) -> str:
    return f"{path}: is owned by uid {uid}, not by the user running Custodian (uid {os.geteuid()})"
