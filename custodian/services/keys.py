"""Signing keys: the project's two trust stores, generating a key pair, revoking a key.

A name the command line cannot use (taken, the pipeline's, unknown, already
revoked) is :class:`UnusableKeyName`; the CLI reports it against its NAME argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audits.errors import AuditError
from audits.keys import KeyFileExists, create_signing_key
from audits.trust import (
    KeyAlreadyRevoked,
    KeyNameTaken,
    KeyRole,
    TrustedKey,
    TrustStore,
    UnknownKeyName,
)
from custodian.project import PIPELINE_KEY_NAME, Project, private_key_path
from custodian.services import trail


class UnusableKeyName(AuditError):
    """The key name given cannot be used for this (a usage error of NAME)."""


@dataclass(frozen=True)
class GeneratedKey:
    entry: TrustedKey
    private_key: Path
    store: TrustStore


def generate(project: Project, name: str, role: KeyRole) -> GeneratedKey:
    """Make key pair ``name``: the private key under $CUSTODIAN_HOME, the public key trusted."""
    if name == PIPELINE_KEY_NAME and role is not KeyRole.PIPELINE:
        raise UnusableKeyName(f"{name!r} is the pipeline's signing key; give this key another name")
    store = project.trust_store_for(role)
    # Checked before the private key exists, so a refusal leaves nothing behind. Names are
    # unique across both stores: a sign-off names its key, and so does `keys revoke`.
    if holding(project, name) is not None:
        raise UnusableKeyName(f"a key named {name!r} is already in the trust store")
    path = private_key_path(name)
    try:
        key = create_signing_key(path)
    except KeyFileExists:
        raise UnusableKeyName(f"a private key named {name!r} already exists at {path}") from None
    try:
        entry = store.add(name, role, key.public_key)
    except KeyNameTaken as exc:
        path.unlink()  # lost a race for the name: this key was never trusted or used
        raise UnusableKeyName(str(exc)) from None
    trail.current().decision(
        {"key_generated": {"name": name, "role": role.value, "fingerprint": entry.fingerprint}}
    )
    return GeneratedKey(entry=entry, private_key=path, store=store)


def revoke(project: Project, name: str, reason: str) -> TrustedKey:
    """Revoke key ``name`` in whichever store holds it; logged as a decision."""
    store = holding(project, name) or project.trust_store()
    try:
        entry = store.revoke(name, reason)
    except (UnknownKeyName, KeyAlreadyRevoked) as exc:
        raise UnusableKeyName(str(exc)) from None
    trail.current().decision(
        {"key_revoked": {"name": name, "fingerprint": entry.fingerprint, "reason": reason}}
    )
    return entry


def stores(project: Project) -> dict[str, TrustStore]:
    """The committed store of people's keys and this checkout's store of pipeline keys."""
    return {"project": project.trust_store(), "local": project.local_trust_store()}


def holding(project: Project, name: str) -> TrustStore | None:
    """The store that has a key called ``name``, if either does."""
    return next(
        (
            store
            for store in stores(project).values()
            if any(entry.name == name for entry in store.entries())
        ),
        None,
    )
