"""The artifact manifest's file list, and how the files on disk differ from a manifest.

The files are every stage's ``deps``, ``outs``, ``metrics`` and ``plots`` in
dvc.yaml, plus the params files its stages read, with directories expanded:
the same list DVC works from, never a second copy of it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml
from pydantic import ValidationError

from audits.canonical import canonical_sha256
from audits.errors import AuditError
from audits.manifest import (
    DifferenceKind,
    Manifest,
    ManifestDifference,
    check_manifest,
)
from custodian.project import Project, stage_entry_paths
from governance.errors import InputError

DEFAULT_MANIFEST = Path("reports/manifest.json")
# Interpreter caches appear next to code deps whenever it is imported; they are not inputs.
ALWAYS_EXCLUDED = ("__pycache__", "*.pyc")
_OUTPUT_KEYS = ("outs", "metrics", "plots")
_FILE_KEYS = ("deps", *_OUTPUT_KEYS)


class ArtifactsChanged(AuditError):
    """Files differ from the manifest (exit 1)."""


def read_against_disk(
    project: Project, manifest_path: Path
) -> tuple[Manifest, list[ManifestDifference]]:
    """The manifest at ``manifest_path`` and every file (and dvc.lock) that differs from it."""
    manifest = load_manifest(manifest_path)
    return manifest, artifact_differences(project, manifest, manifest_path)


def require_unchanged(differences: list[ManifestDifference], manifest_path: Path) -> None:
    """ArtifactsChanged naming each changed, missing or added file."""
    if differences:
        named = ", ".join(f"{d.path} ({d.kind.value})" for d in differences)
        raise ArtifactsChanged(f"{len(differences)} file(s) differ from {manifest_path}: {named}")


def artifact_differences(
    project: Project, manifest: Manifest, manifest_path: Path
) -> list[ManifestDifference]:
    """Every file, and dvc.lock, that is not as ``manifest`` (read from ``manifest_path``) says."""
    return check_manifest(project.root, manifest) + _lock_difference(
        project, manifest, manifest_path
    )


def pipeline_paths(project: Project, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Every path dvc.yaml's stages (but ``skip``) name as a dependency, output, metric, plot
    or params file."""
    stages = project.dvc_stages()
    if not stages:
        raise InputError(f"{project.dvc_yaml_path}: no stages")
    paths: set[str] = set()
    for name, stage in stages.items():
        if name not in skip:
            paths.update(_stage_paths(project, str(name), stage))
    return sorted(paths)


def _stage_paths(project: Project, name: str, stage: object) -> set[str]:
    where = f"{project.dvc_yaml_path.name}: stages.{name}"
    if not isinstance(stage, dict):
        raise InputError(f"{where}: not a stage")
    if "foreach" in stage or "matrix" in stage:
        raise InputError(f"{where}: templated stages (foreach/matrix) are not supported")
    wdir = PurePosixPath(str(stage.get("wdir", ".")))
    names = stage_entry_paths(stage, _FILE_KEYS, where)
    for entry in stage.get("params") or []:
        # A bare key is read from params.yaml; a mapping names its own params file.
        names += [str(file) for file in entry] if isinstance(entry, dict) else ["params.yaml"]
    resolved = {(wdir / name).as_posix() for name in names}
    templated = sorted(path for path in resolved if "${" in path)
    if templated:
        raise InputError(f"{where}: templated path {templated[0]!r} is not supported")
    return {str(PurePosixPath(path)) for path in resolved}


def inside(project: Project, path: Path) -> str | None:
    """``path`` relative to the project root, or None if it lies outside the project."""
    resolved = path.resolve()
    if not resolved.is_relative_to(project.root):
        return None
    return resolved.relative_to(project.root).as_posix()


def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; InputError naming the file and field if it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror} (run custodian manifest)") from None
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "manifest"
        raise InputError(f"{path}: not a manifest: {where}: {error['msg']}") from None


def lock_digest(project: Project, manifests: tuple[str, ...]) -> str | None:
    """SHA-256 of dvc.lock's canonical JSON, without the entries of stages writing ``manifests``.

    When the manifest is itself a pipeline stage, DVC records that stage in
    dvc.lock only after it ran: binding the whole file would make every
    manifest stale the moment it is written. Every other stage's entry is final
    by then, and those are what the manifest binds.
    """
    lock = project.dvc_lock_path
    if not lock.is_file():
        return None
    try:
        content = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{lock}: not valid YAML ({type(exc).__name__})") from None
    if "stages" in content:
        writers = _stages_writing(project, manifests) | stages_after(project, manifests)
        content["stages"] = {k: v for k, v in content["stages"].items() if k not in writers}
    return canonical_sha256(content)


def _stages_writing(project: Project, paths: tuple[str, ...]) -> set[str]:
    return {
        name
        for name, stage in project.dvc_stages().items()
        if isinstance(stage, dict)
        and set(stage_entry_paths(stage, _OUTPUT_KEYS, f"stages.{name}")) & set(paths)
    }


def stages_after(project: Project, paths: tuple[str, ...]) -> set[str]:
    """Stages that read ``paths`` or the outputs of such a stage, directly or not: they run
    after the manifest, so neither their files nor their dvc.lock entries are final when it
    is built."""
    stages = {n: s for n, s in project.dvc_stages().items() if isinstance(s, dict)}
    reached: set[str] = set()
    frontier = set(paths)
    while frontier:
        found = {
            name
            for name, stage in stages.items()
            if name not in reached
            and set(stage_entry_paths(stage, ("deps",), f"stages.{name}")) & frontier
        }
        reached |= found
        frontier = {
            path
            for name in found
            for path in stage_entry_paths(stages[name], _OUTPUT_KEYS, f"stages.{name}")
        }
    return reached


def _lock_difference(
    project: Project, manifest: Manifest, manifest_path: Path
) -> list[ManifestDifference]:
    """dvc.lock is bound by digest rather than listed, so compare it here."""
    expected = manifest.dvc_lock_sha256
    written_by = inside(project, manifest_path)
    actual = lock_digest(project, () if written_by is None else (written_by,))
    if expected == actual:
        return []
    if expected is None:
        kind = DifferenceKind.ADDED
    else:
        kind = DifferenceKind.MISSING if actual is None else DifferenceKind.CHANGED
    return [
        ManifestDifference(
            kind=kind, path="dvc.lock", expected_sha256=expected, actual_sha256=actual
        )
    ]
