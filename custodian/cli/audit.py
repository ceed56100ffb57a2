"""``custodian audit path|show|verify|checkpoint``: review the audit log and anchor it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from audits.log import format_timeline, load_checkpoint
from custodian.project import Project
from custodian.services import trail
from custodian.services.audit_log import LogNotVerified, verify_log


@click.group("audit")
def audit() -> None:
    """Review the tamper-evident audit log."""


@audit.command("path")
def path_command() -> None:
    """Print the audit log's path."""
    click.echo(str(Project.discover().audit_log_path))


@audit.command("show")
@click.option("--stage", help="Only events of this pipeline stage.")
@click.option("--since", help="Only events at or after this ISO time (UTC unless it has a zone).")
@click.option("--actor", help="Only events by this actor.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_command(stage: str | None, since: str | None, actor: str | None, as_json: bool) -> None:
    """Print the log as a timeline, oldest first."""
    log = Project.discover().audit_log()
    entries = log.read(stage=stage, since=_parse_since(since), actor=actor)
    if as_json:
        click.echo(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2))
    elif entries:
        click.echo(format_timeline(entries))
    else:
        filtered = stage is not None or since is not None or actor is not None
        click.echo(f"no events in {log.where}" + (" match the filters" if filtered else ""))


@audit.command("verify")
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Verify this log (its checkpoint beside it) instead of the project's.",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A checkpoint exported earlier (audit checkpoint --out): prove the log extends it.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify_command(log_path: Path | None, against: Path | None, as_json: bool) -> None:
    """Check the log's chain, signatures and checkpoints, and the privacy ledger against it.

    Exit 0 if intact (warnings allowed), 1 naming the first bad entry and why.
    The privacy ledger is cross-checked when the project's own log is verified.
    """
    project = Project.discover()
    log = project.audit_log(log_path)
    anchor = load_checkpoint(against) if against is not None else None
    report, failure, ledger = verify_log(project, log, anchor)
    if as_json:
        payload = {**report.model_dump(mode="json"), "ledger_disagreements": ledger}
        click.echo(json.dumps({**payload, "ok": failure is None}, indent=2))
    else:
        problems = [problem.message for problem in report.problems] + ledger
        for line in ([failure] if failure and failure not in problems else []) + problems:
            click.echo(f"problem: {line}")
    for warning in report.warnings:
        # On failure stderr carries the one error line; the warnings join the problems.
        click.echo(f"custodian: warning: {warning}", err=failure is None)
    if failure is not None:
        raise LogNotVerified(failure)
    if not as_json:
        click.echo(f"{log.where}: {report.summary()}")


@audit.command("checkpoint")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the signed checkpoint (keep it outside the project).",
)
def checkpoint_command(out: Path) -> None:
    """Sign a fresh checkpoint of the log and export it for anchoring outside the project."""
    active = trail.current()
    active.sign()
    signed = active.log.export_checkpoint(out)
    head = signed.tree_head
    click.echo(
        f"wrote {out}: {head.tree_size} entries, root {head.root_hash[:16]}..., "
        f"signed by {head.key_fingerprint[:16]}...; verify later with "
        f"`custodian audit verify --against {out}`"
    )


@audit.command("adopt")
@click.option("--reason", required=True, help="Why a new signed tree may start over this log.")
def adopt_command(reason: str) -> None:
    """Start a new signed tree over the log as it is now; a person's logged decision."""
    reason = " ".join(reason.split())
    if not reason:
        raise click.BadParameter("a reason is required", param_hint="--reason")
    trail.current().decision({"adopted_log": {"reason": reason}})
    click.echo(
        "adopted the audit log as a new signed tree (the old checkpoint files are kept as "
        "*.adopted-N); sign-offs that witnessed the old log still block a release until "
        "they are removed"
    )


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T09:30:00Z)",
            param_hint="--since",
        ) from None
    # The timeline is shown in UTC, so a time without a zone means UTC there too.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
