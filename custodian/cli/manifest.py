"""``custodian manifest``: hashes of every pipeline file (:mod:`custodian.stages.manifest`)."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.project import Project
from custodian.services.manifests import DEFAULT_MANIFEST
from custodian.stages import manifest as stage


@click.command("manifest")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_MANIFEST,
    show_default=True,
    help="Where to write the manifest.",
)
def manifest_command(out: Path) -> None:
    """Hash every input and output of the pipeline, bound to the git commit and dvc.lock."""
    manifest = stage.run(Project.discover(), out)
    click.echo(
        f"wrote {out}: {len(manifest.files)} files under {len(manifest.paths)} paths, "
        f"commit {(manifest.git_commit or 'none')[:12]}, "
        f"dvc.lock {(manifest.dvc_lock_sha256 or 'absent')[:12]}"
    )
