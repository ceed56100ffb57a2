"""Artifact manifest: the SHA-256 and size of every pipeline input and output, bound to a commit.

:func:`build_manifest` hashes every regular file under the paths it is given
(directories expanded recursively, symbolic links followed to their content,
any file or directory matching an ``exclude`` pattern skipped) and records them
sorted by path, together with the git commit and the SHA-256 of the lock file
they were produced under. The manifest keeps the paths and patterns it was
built from, so :func:`check_manifest` can expand them again and name every file
that changed, went missing, or appeared since.

Which paths make up "the pipeline" is the caller's business (the CLI reads
them from ``dvc.yaml``); this module only hashes and compares.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, StringConstraints, model_validator

from audits.errors import AuditError

MANIFEST_FORMAT = "custodian-manifest/v1"
_CHUNK = 1 << 20

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
GitCommit = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{40}|[0-9a-f]{64})$")]
RelativePath = Annotated[str, StringConstraints(min_length=1)]


class ManifestError(AuditError):
    """A path cannot be put in a manifest: outside the root, absent, or unreadable."""


class ManifestFile(BaseModel):
    """One file: its path relative to the root (POSIX form), SHA-256 and size in bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: RelativePath
    sha256: Sha256Hex
    size: NonNegativeInt


class Manifest(BaseModel):
    """Every file under ``paths`` (minus ``exclude``), bound to a git commit and a lock file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["custodian-manifest/v1"] = MANIFEST_FORMAT
    git_commit: GitCommit | None
    dvc_lock_sha256: Sha256Hex | None
    paths: tuple[RelativePath, ...]
    exclude: tuple[str, ...] = ()
    files: tuple[ManifestFile, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [item.path for item in self.files]
        if names != sorted(set(names)):
            raise ValueError("files must be sorted by path, each listed once")
        for name in (*self.paths, *names):
            problem = _relative_problem(name)
            if problem:
                raise ValueError(problem)
        stray = [name for name in names if not _under_any(name, self.paths)]
        if stray:
            raise ValueError(f"{stray[0]} is not under any of the manifest's paths")
        return self


class DifferenceKind(StrEnum):
    """How a file differs from its manifest."""

    CHANGED = "changed"
    MISSING = "missing"
    ADDED = "added"


class ManifestDifference(BaseModel):
    """One file that is not as the manifest recorded it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: DifferenceKind
    path: str
    expected_sha256: Sha256Hex | None = None
    actual_sha256: Sha256Hex | None = None

    def __str__(self) -> str:
        if self.kind is DifferenceKind.CHANGED:
            assert self.expected_sha256 is not None and self.actual_sha256 is not None
            return (
                f"changed: {self.path} (sha256 {self.expected_sha256[:12]} in the manifest, "
                f"now {self.actual_sha256[:12]})"
            )
        if self.kind is DifferenceKind.MISSING:
            return f"missing: {self.path} (in the manifest, not on disk)"
        return f"added: {self.path} (on disk, not in the manifest)"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    root: str | os.PathLike[str],
    paths: Iterable[str],
    git_commit: str | None,
    dvc_lock_sha256: str | None,
    *,
    exclude: Iterable[str] = (),
) -> Manifest:
    """Hash every file under ``paths`` (relative to ``root``); each path must exist.

    An ``exclude`` pattern (``fnmatch`` syntax) matches a file's whole relative
    path or any one component of it, so ``"__pycache__"`` skips those
    directories wherever they are and ``"reports/manifest.json"`` that one file.
    """
    if isinstance(paths, str) or isinstance(exclude, str):
        # A bare string would be iterated character by character: "*" would exclude everything.
        raise TypeError("paths and exclude are collections of strings, not one string")
    base = Path(root)
    wanted = tuple(sorted({_normalise(path) for path in paths}))
    patterns = tuple(exclude)
    for path in wanted:
        if not (base / path).exists():
            raise ManifestError(f"{path}: not found under {base}; has the pipeline run?")
    files = tuple(
        ManifestFile(path=name, sha256=_hash(base, name), size=(base / name).stat().st_size)
        for name in _expand(base, wanted, patterns)
    )
    return Manifest(
        git_commit=git_commit,
        dvc_lock_sha256=dvc_lock_sha256,
        paths=wanted,
        exclude=patterns,
        files=files,
    )


def check_manifest(root: str | os.PathLike[str], manifest: Manifest) -> list[ManifestDifference]:
    """Every file under the manifest's paths that changed, is missing or was added, by path."""
    base = Path(root)
    expected = {item.path: item for item in manifest.files}
    present = set(_expand(base, manifest.paths, manifest.exclude))
    differences = [
        ManifestDifference(kind=DifferenceKind.MISSING, path=name, expected_sha256=item.sha256)
        for name, item in expected.items()
        if name not in present
    ]
    differences += [
        ManifestDifference(kind=DifferenceKind.ADDED, path=name, actual_sha256=_hash(base, name))
        for name in present
        if name not in expected
    ]
    for name in present & expected.keys():
        actual = _hash(base, name)
        if actual != expected[name].sha256:
            differences.append(
                ManifestDifference(
                    kind=DifferenceKind.CHANGED,
                    path=name,
                    expected_sha256=expected[name].sha256,
                    actual_sha256=actual,
                )
            )
    return sorted(differences, key=lambda difference: difference.path)


def _expand(base: Path, paths: Iterable[str], patterns: tuple[str, ...]) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``paths``, sorted, each once."""
    found: set[str] = set()
    for path in paths:
        target = base / path
        if target.is_file():
            found.add(path)
        elif target.is_dir():
            found.update(_walk(base, target, patterns))
    return iter(sorted(name for name in found if not _excluded(name, patterns)))


def _walk(base: Path, directory: Path, patterns: tuple[str, ...]) -> Iterator[str]:
    def fail(error: OSError) -> None:
        raise ManifestError(f"cannot list {error.filename}: {error.strerror}")

    for current, dirs, names in os.walk(directory, onerror=fail, followlinks=True):
        here = Path(current).relative_to(base).as_posix()
        # Pruned here, so an excluded tree (a virtualenv, a cache) is never read.
        dirs[:] = [name for name in dirs if not _excluded(f"{here}/{name}", patterns)]
        for name in names:
            full = Path(current) / name
            if full.is_file():
                yield full.relative_to(base).as_posix()


def _hash(base: Path, name: str) -> str:
    try:
        return sha256_file(base / name)
    except OSError as exc:
        raise ManifestError(f"{name}: cannot read: {exc.strerror}") from exc


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether a pattern matches any component of ``name`` or any leading part of it."""
    parts = PurePosixPath(name).parts
    candidates = {*parts, *("/".join(parts[: end + 1]) for end in range(len(parts)))}
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates for pattern in patterns)


def _normalise(path: str) -> str:
    name = PurePosixPath(Path(path).as_posix()).as_posix()
    problem = _relative_problem(name)
    if problem:
        raise ManifestError(problem)
    return name


def _relative_problem(name: str) -> str | None:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name in ("", "."):
        return f"{name!r}: manifest paths are relative to the root and stay inside it"
    return None


def _under_any(name: str, roots: Iterable[str]) -> bool:
    return any(name == root or name.startswith(f"{root}/") for root in roots)
