"""``custodian trust init|add|revoke|sign|status``: the signed root of trust for people's keys.

A key generated with ``custodian keys generate`` sits in the committed store
but counts for nothing until the trust administrators put it in the root
(:mod:`audits.trust_root`): one administrator proposes a change (``init``,
``add``, ``revoke``, each signing it with their key), the others ``sign`` it,
and it counts once ``threshold`` of the previous version's administrators and
of its own have. Every command is logged in the audit log like any other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from audits.keys import SigningKey, SigningKeyError, load_signing_key
from audits.trust import KeyRole, UnknownKeyName
from audits.trust_root import (
    Root,
    SignedRoot,
    TrustRootError,
    by_fingerprint,
    revoked_key,
    root_key,
    with_key,
    without_key,
)
from custodian.project import Project, private_key_path
from custodian.services import trail

_AS = click.option("--as", "admin", required=True, help="Your trust-admin key's name.")
_EXPIRES = click.option(
    "--expires-days",
    type=click.IntRange(1, 3660),
    default=365,
    show_default=True,
    help="The new version expires this many days from now.",
)


@click.group("trust")
def trust() -> None:
    """Manage the signed root of trust (trust/root.json)."""


@trust.command("init")
@click.option("--admin", "admins", multiple=True, required=True, help="A trust-admin key's name.")
@click.option("--threshold", type=click.IntRange(1), required=True, help="Signatures needed.")
@_AS
@_EXPIRES
def init_command(admins: tuple[str, ...], threshold: int, admin: str, expires_days: int) -> None:
    """Write root version 1 from today's trust store (its keys, its revocations)."""
    project = Project.discover()
    root_files = project.trust_root()
    if root_files.exists():
        raise click.UsageError(f"{root_files.current_path} exists; change it with add or revoke")
    store = project.trust_store()
    records = {entry.name: entry for entry in store.entries()}
    chosen = []
    for name in admins:
        entry = records.get(name)
        if entry is None or entry.role is not KeyRole.TRUST_ADMIN or entry.revoked:
            raise click.BadParameter(
                f"{name!r} is not a trusted trust-admin key in {store.directory} "
                f"(custodian keys generate {name} --role trust-admin)",
                param_hint="--admin",
            )
        chosen.append(root_key(entry, store.public_key(entry)))
    now = datetime.now(UTC)
    people = [e for e in store.entries() if e.role.signs_off]
    try:
        root = Root(
            version=1,
            expires=now + timedelta(days=expires_days),
            threshold=threshold,
            administrators=by_fingerprint(chosen),
            keys=by_fingerprint(root_key(e, store.public_key(e)) for e in people if not e.revoked),
            revoked=by_fingerprint(
                revoked_key(root_key(e, store.public_key(e)), e.revoked_reason or "", e.revoked_at)
                for e in people
                if e.revoked and e.revoked_at is not None
            ),
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[-1].strip()) from None
    _publish(project, SignedRoot(root=root), admin, "trust_root_created")


@trust.command("add")
@click.argument("name")
@_AS
@_EXPIRES
def add_command(name: str, admin: str, expires_days: int) -> None:
    """Propose trusting key NAME (from the committed store) in its role."""
    project = Project.discover()
    store = project.trust_store()
    try:
        entry = store.get(name)
    except UnknownKeyName as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    if not entry.role.signs_off or entry.revoked:
        raise click.BadParameter(
            f"{name!r} is a {entry.role.value} key{' (revoked)' if entry.revoked else ''}; "
            f"only reviewers' keys go in the root",
            param_hint="NAME",
        )
    draft = project.trust_root().draft()
    expires = datetime.now(UTC) + timedelta(days=expires_days)
    draft.root = with_key(draft.root, root_key(entry, store.public_key(entry)), expires)
    _publish(project, draft, admin, "trust_root_key_added", {"name": name})


@trust.command("revoke")
@click.argument("name")
@click.option("--reason", required=True, help="Why the key can no longer be trusted.")
@_AS
@_EXPIRES
def revoke_command(name: str, reason: str, admin: str, expires_days: int) -> None:
    """Propose revoking key NAME for good (keys revoke NAME also stops it at once)."""
    project = Project.discover()
    draft = project.trust_root().draft()
    now = datetime.now(UTC)
    try:
        draft.root = without_key(draft.root, name, reason, now, now + timedelta(days=expires_days))
    except UnknownKeyName as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    _publish(project, draft, admin, "trust_root_key_revoked", {"name": name, "reason": reason})


@trust.command("sign")
@_AS
def sign_command(admin: str) -> None:
    """Add your signature to the newest root version."""
    project = Project.discover()
    versions = project.trust_root().versions()
    if not versions:
        raise TrustRootError("no trust root yet (custodian trust init)")
    _publish(project, versions[-1], admin, "trust_root_signed")


@trust.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Say whether the root verifies, which version counts, and whose keys it trusts."""
    review = Project.discover().trust_root().review()
    trusted = review.trusted
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": review.ok,
                    "problems": list(review.problems),
                    "version": trusted.version if trusted else None,
                    "keys": sorted(k.name for k in trusted.keys.values()) if trusted else [],
                    "revoked": sorted(k.name for k in trusted.revoked.values()) if trusted else [],
                },
                indent=2,
            )
        )
    else:
        for problem in review.problems:
            click.echo(f"problem: {problem}")
        if trusted is not None:
            names = ", ".join(f"{k.name} ({k.role.value})" for k in trusted.keys.values())
            click.echo(f"root version {trusted.version} (threshold {trusted.threshold}): {names}")
    if not review.ok:
        raise TrustRootError(review.problems[0])


def _publish(
    project: Project, signed: SignedRoot, admin: str, kind: str, details: dict | None = None
) -> None:
    """Sign ``signed`` as ``admin``, write it, log it and say what it still needs."""
    key = _admin_key(admin)
    administrators = signed.root.administrators
    versions = project.trust_root().versions()
    previous = versions[signed.root.version - 2].root if signed.root.version > 1 else None
    allowed = administrators.keys() | (previous.administrators.keys() if previous else set())
    if key.fingerprint not in allowed:
        raise click.BadParameter(
            f"{admin!r} is not an administrator of this root version", param_hint="--as"
        )
    signed.sign(key)
    project.trust_root().write(signed)
    own = len(signed.signed_by(administrators))
    before = len(signed.signed_by(previous.administrators)) if previous else None
    missing = [f"{own}/{signed.root.threshold} of its administrators"]
    if previous is not None:
        missing.append(f"{before}/{previous.threshold} of version {previous.version}'s")
    relative = project.trust_root().current_path.relative_to(project.root).as_posix()
    trail.current().decision(
        {kind: {"version": signed.root.version, "by": admin, **(details or {})}}
    )
    click.echo(
        f"root version {signed.root.version} signed by {admin}: {', '.join(missing)} "
        f"signed\n  wrote {relative} (commit trust/root.json and trust/root/)"
    )


def _admin_key(name: str) -> SigningKey:
    try:
        return load_signing_key(private_key_path(name))
    except SigningKeyError as exc:
        raise click.BadParameter(str(exc), param_hint="--as") from None
