"""The audit stage: the artifact manifest, SHA-256 of every file the pipeline names.

The files are every stage's ``deps``, ``outs``, ``metrics`` and ``plots`` in
dvc.yaml and the params files they read (:func:`pipeline_paths`), bound to the
git commit and to dvc.lock's entries for every stage that runs before it.
"""

from __future__ import annotations

from pathlib import Path

from audits.files import atomic_write_json
from audits.manifest import Manifest, build_manifest, sha256_file
from custodian.project import Project
from custodian.services import trail
from custodian.services.manifests import (
    ALWAYS_EXCLUDED,
    inside,
    lock_digest,
    pipeline_paths,
    stages_after,
)


def run(project: Project, out: Path) -> Manifest:
    """Hash the pipeline's files in ``project``; write the manifest to ``out``."""
    out_name = inside(project, out)
    # The manifest cannot hash itself, even where dvc.yaml declares it as an output.
    itself = () if out_name is None else (out_name,)
    # Nor the stages that run after it (the compliance pack, made from it): they bind it
    # by its hash instead.
    later = stages_after(project, itself)
    paths = [path for path in pipeline_paths(project, skip=later) if path not in itself]
    manifest = build_manifest(
        project.root,
        paths,
        git_commit=project.git_commit(),
        dvc_lock_sha256=lock_digest(project, itself),
        exclude=(*ALWAYS_EXCLUDED, *itself),
    )
    atomic_write_json(out, manifest.model_dump(mode="json"))
    trail.current().record_outputs({out_name or str(out.resolve()): sha256_file(out)})
    return manifest
