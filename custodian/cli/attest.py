"""``custodian attest NIST-ID --as NAME --note TEXT``: a person's signed word for a subcategory
(:mod:`custodian.services.attest`)."""

from __future__ import annotations

import click

from audits.signoff import NOTE_LIMIT
from custodian.project import Project
from custodian.services.attest import UnknownSubcategory, attest
from custodian.services.signoffs import UnusableReviewerKey


@click.command("attest")
@click.argument("subcategory")
@click.option("--as", "name", required=True, help="Your key's name in the trust store.")
@click.option("--note", help="What you checked, and where it is recorded.")
def attest_command(subcategory: str, name: str, note: str | None) -> None:
    """Sign an attestation of a NIST AI RMF SUBCATEGORY (e.g. 'GOVERN 2.2') as NAME."""
    note = " ".join(note.split()) if note else None
    if note is not None and len(note) > NOTE_LIMIT:
        raise click.BadParameter(f"at most {NOTE_LIMIT} characters", param_hint="--note")
    subcategory = " ".join(subcategory.split()).upper()
    try:
        attested = attest(Project.discover(), subcategory, name, note)
    except UnknownSubcategory as exc:
        raise click.BadParameter(str(exc), param_hint="SUBCATEGORY") from None
    except UnusableReviewerKey as exc:
        raise click.BadParameter(str(exc), param_hint="--as") from None
    who = attested.attester
    click.echo(
        f"attested {attested.subcategory} as {who.name} ({who.role.value})\n  wrote "
        f"{attested.relative} (commit it; rerun the report stage to show it on the page)"
    )
