"""``custodian signoff --as NAME [--note TEXT]``: sign exactly the artifacts that were reviewed
(:mod:`custodian.services.signoffs`)."""

from __future__ import annotations

import click

from audits.signoff import NOTE_LIMIT
from custodian.project import Project
from custodian.services.signoffs import UnusableReviewerKey, sign


@click.command("signoff")
@click.option("--as", "name", required=True, help="Your key's name in the trust store.")
@click.option("--note", help="What you reviewed, or conditions of your approval.")
def signoff_command(name: str, note: str | None) -> None:
    """Sign the current model and reports as NAME; refused while a gate fails."""
    note = " ".join(note.split()) if note else None
    if note is not None and len(note) > NOTE_LIMIT:
        raise click.BadParameter(f"at most {NOTE_LIMIT} characters", param_hint="--note")
    try:
        signed = sign(Project.discover(), name, note)
    except UnusableReviewerKey as exc:
        raise click.BadParameter(str(exc), param_hint="--as") from None
    reviewer = signed.reviewer
    click.echo(
        f"signed as {reviewer.name} ({reviewer.role.value}): {signed.subjects} artifacts, "
        f"{signed.gates} gates\n  wrote {signed.relative} (commit it)"
    )
