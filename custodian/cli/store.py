"""``custodian store use|init|migrate|status``: where this checkout keeps its records.

The choice lives in ``.custodian/store.toml`` (local, never committed; no password).
The privacy ledger and the audit log (its entries, checkpoints and signed-head history)
follow it; the trust stores stay in files.
"""

from __future__ import annotations

import json

import click

from audits.log import SignedCheckpoint
from custodian.project import Project
from privacy.ledger import PrivacyLedger, read_link
from stores import config, postgres
from stores.select import open_stream
from stores.stream import LocalStream
from stores.transfer import copy_stream


@click.group("store")
def store() -> None:
    """Choose and set up the store for the ledger and audit log: local files or PostgreSQL."""


@store.command("use")
@click.argument("url")
@click.option("--project", "project_id", help="Project id in the shared database.")
def use_command(url: str, project_id: str | None) -> None:
    """Keep records in URL (postgresql://..., no password), or in local files with `local`."""
    directory = Project.discover().evidence_dir
    if url == "local":
        path = config.save(directory, None)
        click.echo(f"store: local files ({path} removed)")
        return
    if project_id is None:
        raise click.UsageError("--project is required with a postgresql:// URL")
    try:
        chosen = config.StoreConfig(url, project_id)
    except config.StoreConfigError as err:
        raise click.BadParameter(str(err), param_hint="URL") from None
    path = config.save(directory, chosen)
    click.echo(f"store: {postgres.PostgresStream(chosen, 'privacy-ledger').label} ({path})")


@store.command("init")
@click.option("--url", help="Connect as this (an administrator); default: the configured URL.")
@click.option("--project", "project_id", help="Project to register; default: the configured one.")
def init_command(url: str | None, project_id: str | None) -> None:
    """Create the schema and roles (migrations shipped with Custodian) and register a project."""
    chosen = config.load(Project.discover().evidence_dir)
    url = url or (chosen.url if chosen else None)
    project_id = project_id or (chosen.project if chosen else None)
    if url is None or project_id is None:
        raise click.UsageError("no store configured: run `custodian store use` or give --url")
    try:
        config.check_url(url)
    except config.StoreConfigError as err:
        raise click.BadParameter(str(err), param_hint="--url") from None
    with postgres.connect(url) as conn:
        applied = postgres.migrate_schema(conn)
        added = postgres.add_project(conn, project_id)
    for name in applied:
        click.echo(f"applied {name}")
    state = "registered" if added else "already registered"
    click.echo(
        f"project {project_id} {state}; grant its roles to people's login roles:\n"
        f"  GRANT {postgres.writer_role(project_id)} TO <trainer>;\n"
        f"  GRANT {postgres.reviewer_role(project_id)} TO <reviewer>;"
    )


@store.command("migrate")
def migrate_command() -> None:
    """Import this checkout's local ledger into the configured store, checking every hash."""
    project = Project.discover()
    path = project.privacy_ledger_path
    target = open_stream(path, read_link)
    if isinstance(target, LocalStream):
        raise click.UsageError("the store is local files: run `custodian store use` first")
    done = copy_stream(LocalStream(path, read_link), target, read_link)
    status = PrivacyLedger(path).verify()  # the ledger's own checks, on the server's copy
    click.echo(
        f"privacy ledger: {done.copied} records imported, {done.already} already there; "
        f"{status.records} records verify, head {status.head[:12]}"
    )


@store.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Backend, size, last audit-log checkpoint and spend per dataset of this checkout's store."""
    project = Project.discover()
    ledger = PrivacyLedger(project.privacy_ledger_path)
    verified = ledger.verify()
    log = project.audit_log()
    report = {
        "backend": ledger.store.backend,
        "where": ledger.store.label,
        "ledger_records": verified.records,
        "ledger_head": verified.head,
        "audit_log": log.where,
        "last_checkpoint": _checkpoint_summary(log.last_checkpoint()),
        "spend": [
            {"dataset_sha256": s.dataset_sha256, "epsilon": s.spent_epsilon, "steps": s.steps}
            for s in ledger.summary()
        ],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"backend: {report['backend']} ({report['where']})")
    click.echo(f"privacy ledger: {verified.records} records, head {verified.head[:12]}")
    checkpoint = report["last_checkpoint"]
    if checkpoint is None:
        click.echo(f"last checkpoint: none yet ({log.where})")
    else:
        click.echo(
            f"last checkpoint: {checkpoint['tree_size']} entries (last entry "
            f"{checkpoint['last_entry']}), {checkpoint['time']}, root "
            f"{checkpoint['root_hash'][:12]} (unverified: custodian audit verify checks it)"
        )
    for spend in report["spend"]:
        click.echo(
            f"  {spend['dataset_sha256'][:12]}  epsilon {spend['epsilon']:.4g}  "
            f"steps {spend['steps']}"
        )


def _checkpoint_summary(signed: SignedCheckpoint | None) -> dict[str, object] | None:
    """The newest signed head as status shows it; ``last_entry`` is the index it ends at."""
    if signed is None:
        return None
    head = signed.tree_head
    return {
        "tree_size": head.tree_size,
        "last_entry": head.tree_size - 1 if head.tree_size else None,
        "time": head.time,
        "root_hash": head.root_hash,
        "key_fingerprint": head.key_fingerprint,
    }
