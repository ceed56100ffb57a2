"""``custodian release check [--json]``: the deployment gate (:mod:`custodian.services.release`).

It reads and writes nothing else: running the gate is not an event in the log.
"""

from __future__ import annotations

import json

import click

from audits.signoff import SignoffStatus
from custodian.project import Project
from custodian.services.release import review


@click.group("release")
def release() -> None:
    """Decide whether the current artifacts may be released."""


@release.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable verdict on stdout.")
def check_command(as_json: bool) -> None:
    """Exit 0 if the required roles signed exactly the current artifacts and the log verifies."""
    verdict = review(Project.discover())
    if as_json:
        click.echo(json.dumps(verdict.to_json(), indent=2))
    else:
        for check in verdict.signoffs:
            who = f" ({check.reviewer} as {check.role.value}, actor {check.actor})"
            click.echo(f"sign-off {check.file}: {check.status.value}{who if check.role else ''}")
        for attested in verdict.attestations:
            by = f" ({attested.subcategory} by {attested.attester})" if attested.attester else ""
            click.echo(f"attestation {attested.file}: {attested.status.value}{by}")
        for reason in verdict.reasons:
            click.echo(f"blocked: {reason}")
    verdict.require_passed()
    if not as_json:
        counted = {
            c.role: c.reviewer for c in verdict.signoffs if c.status is SignoffStatus.COUNTED
        }
        signers = ", ".join(f"{role.value}: {counted[role]}" for role in verdict.roles)
        required = verdict.required_attestations
        attested = f"; attested: {', '.join(required)}" if required else ""
        click.echo(
            f"release check passed: {signers}{attested}; artifacts unchanged; audit log intact"
        )
