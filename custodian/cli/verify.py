"""``custodian verify artifacts``: the files on disk against the artifact manifest."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.project import Project
from custodian.services.manifests import DEFAULT_MANIFEST, read_against_disk, require_unchanged


@click.group("verify")
def verify() -> None:
    """Check the project's evidence against what is on disk."""


@verify.command("artifacts")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_MANIFEST,
    show_default=True,
    help="The manifest to check against.",
)
def artifacts_command(manifest_path: Path) -> None:
    """Exit 0 if every file matches the manifest; 1 naming each changed, missing or added file."""
    project = Project.discover()
    manifest, differences = read_against_disk(project, manifest_path)
    commit = project.git_commit()
    if manifest.git_commit and commit != manifest.git_commit:
        click.echo(
            f"note: HEAD is {(commit or 'not a commit')[:12]}, the manifest was built at "
            f"{manifest.git_commit[:12]}"
        )
    for difference in differences:
        click.echo(str(difference))
    require_unchanged(differences, manifest_path)
    click.echo(f"all {len(manifest.files)} files and dvc.lock match {manifest_path}")
