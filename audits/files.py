"""Durable, atomic file writes: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audits.errors import AuditError

# A directory holding one of these is a repository, never a stage's output.
_REPOSITORY_MARKERS = (".git", ".dvc")


class UnsafeReplacement(AuditError):
    """An output path names something that is not a replaceable output directory."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory, fsync, rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Pretty, key-sorted JSON so that identical content gives identical bytes (DVC hashes)."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name and swap it in only when complete.

    The old directory is deleted, so a path that names the working directory, one
    of its parents, a repository or a file (``--out .`` by mistake) is refused first.
    """
    target = Path(path)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A staging directory left by a killed run holds a copy of (sensitive) outputs
    # that nothing else would ever remove. Stage outputs have one writer at a time.
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_directory(target.parent)


def _check_replaceable(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UnsafeReplacement(f"{target}: exists and is not a directory; refusing to replace it")
    resolved = target.resolve()
    working = Path.cwd().resolve()
    if resolved == working or resolved in working.parents:
        raise UnsafeReplacement(
            f"{target}: is the working directory or one of its parents; refusing to replace it"
        )
    marker = next((m for m in _REPOSITORY_MARKERS if (resolved / m).exists()), None)
    if marker is not None:
        raise UnsafeReplacement(f"{target}: holds {marker}; refusing to replace a repository")
