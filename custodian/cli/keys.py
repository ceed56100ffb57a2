"""``custodian keys generate|list|revoke``: signing keys and the project's trust store."""

from __future__ import annotations

import json

import click

from audits.keys import KeyFileExists, create_signing_key
from audits.trust import KeyAlreadyRevoked, KeyNameTaken, KeyRole, UnknownKeyName
from custodian.project import PIPELINE_KEY_NAME, Project, private_key_path
from custodian.services import trail
from custodian.services.keys import holding, stores

ROLE = click.Choice([role.value for role in KeyRole])


@click.group("keys")
def keys() -> None:
    """Manage Ed25519 signing keys and the keys this project trusts."""


@keys.command("generate")
@click.argument("name")
@click.option("--role", type=ROLE, required=True, help="What the key may sign.")
def generate_command(name: str, role: str) -> None:
    """Make key pair NAME: the private key under $CUSTODIAN_HOME, the public key trusted here."""
    if name == PIPELINE_KEY_NAME and role != KeyRole.PIPELINE:
        raise click.BadParameter(
            f"{name!r} is the pipeline's signing key; give this key another name",
            param_hint="NAME",
        )
    project = Project.discover()
    store = project.trust_store_for(KeyRole(role))
    # Checked before the private key exists, so a refusal leaves nothing behind. Names are
    # unique across both stores: a sign-off names its key, and so does `keys revoke`.
    if holding(project, name) is not None:
        raise click.BadParameter(
            f"a key named {name!r} is already in the trust store", param_hint="NAME"
        )
    path = private_key_path(name)
    try:
        key = create_signing_key(path)
    except KeyFileExists:
        raise click.BadParameter(
            f"a private key named {name!r} already exists at {path}", param_hint="NAME"
        ) from None
    try:
        entry = store.add(name, KeyRole(role), key.public_key)
    except KeyNameTaken as exc:
        path.unlink()  # lost a race for the name: this key was never trusted or used
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    trail.current().decision(
        {"key_generated": {"name": name, "role": role, "fingerprint": entry.fingerprint}}
    )
    scope = "commit it" if KeyRole(role).is_person else "this checkout only"
    click.echo(
        f"generated {name} ({role}), fingerprint {entry.fingerprint}\n"
        f"  private key: {path} (mode 0600; keep it out of the project)\n"
        f"  trusted in:  {store.directory} ({scope})"
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
    project = Project.discover()
    store = holding(project, name) or project.trust_store()
    try:
        entry = store.revoke(name, reason)
    except (UnknownKeyName, KeyAlreadyRevoked) as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    trail.current().decision(
        {"key_revoked": {"name": name, "fingerprint": entry.fingerprint, "reason": reason}}
    )
    click.echo(f"revoked {name} ({entry.fingerprint[:16]}...): {entry.revoked_reason}")
