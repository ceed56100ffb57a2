"""``custodian keys generate|list|revoke``: signing keys and the project's trust store."""

from __future__ import annotations

import json

import click

from audits.trust import KeyRole
from custodian.project import Project
from custodian.services.keys import UnusableKeyName, generate, revoke, stores

ROLE = click.Choice([role.value for role in KeyRole])


@click.group("keys")
def keys() -> None:
    """Manage Ed25519 signing keys and the keys this project trusts."""


@keys.command("generate")
@click.argument("name")
@click.option("--role", type=ROLE, required=True, help="What the key may sign.")
def generate_command(name: str, role: str) -> None:
    """Make key pair NAME: the private key under $CUSTODIAN_HOME, the public key trusted here."""
    try:
        made = generate(Project.discover(), name, KeyRole(role))
    except UnusableKeyName as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    scope = "commit it" if KeyRole(role).is_person else "this checkout only"
    click.echo(
        f"generated {name} ({role}), fingerprint {made.entry.fingerprint}\n"
        f"  private key: {made.private_key} (mode 0600; keep it out of the project)\n"
        f"  trusted in:  {made.store.directory} ({scope})"
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """List the keys this project trusts, revoked ones included."""
    project = Project.discover()
    listed = [
        (where, entry) for where, store in stores(project).items() for entry in store.entries()
    ]
    if as_json:
        records = [{**entry.model_dump(mode="json"), "store": where} for where, entry in listed]
        click.echo(json.dumps(records, indent=2))
        return
    entries = [entry for _, entry in listed]
    if not entries:
        click.echo("no keys in the trust store yet (the pipeline key is added on first use)")
        return
    click.echo(f"{'NAME':<24} {'ROLE':<16} {'FINGERPRINT':<18} {'ADDED (UTC)':<20} STATUS")
    for entry in entries:
        status = f"revoked: {entry.revoked_reason}" if entry.revoked else "trusted"
        click.echo(
            f"{entry.name:<24} {entry.role.value:<16} {entry.fingerprint[:16]:<18} "
            f"{entry.added:%Y-%m-%d %H:%M:%S}  {status}"
        )


@keys.command("revoke")
@click.argument("name")
@click.option("--reason", required=True, help="Why the key can no longer be trusted.")
def revoke_command(name: str, reason: str) -> None:
    """Revoke key NAME: checkpoints it signed, before or after, no longer verify."""
    if not reason.strip():
        raise click.BadParameter("say why the key is revoked", param_hint="--reason")
    try:
        entry = revoke(Project.discover(), name, reason)
    except UnusableKeyName as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    click.echo(f"revoked {name} ({entry.fingerprint[:16]}...): {entry.revoked_reason}")
