"""``custodian audit path|show|verify|checkpoint``: review the audit log and anchor it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from audits.errors import AuditError
from audits.log import (
    AuditLog,
    NoTrustedKeys,
    SignedCheckpoint,
    VerifyReport,
    format_timeline,
    load_checkpoint,
)
from audits.log.spends import LedgerRunSteps, ledger_disagreements
from audits.log.trusted import verify_trusted
from audits.witness import witness_problems, witnesses
from custodian import trail
from custodian.project import Project


class LogNotVerified(AuditError):
    """The audit log, its checkpoints or the privacy ledger failed verification (exit 1)."""


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
        click.echo(f"no events in {log.path}" + (" match the filters" if filtered else ""))


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
        click.echo(f"{log.path}: {report.summary()}")


def verify_project_log(project: Project) -> str | None:
    """None if the project's audit log and privacy ledger verify, as `audit verify` checks them;
    else the first problem, in one line."""
    try:
        # The witnessed heads are the release gate's own reason (log_not_extending_checkpoint).
        _, failure, _ = verify_log(project, project.audit_log(), witnessed=False)
    except NoTrustedKeys as exc:
        return str(exc)
    return failure


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


# --------------------------------------------------------------------------- helpers


def verify_log(
    project: Project,
    log: AuditLog,
    anchor: SignedCheckpoint | None = None,
    *,
    witnessed: bool = True,
) -> tuple[VerifyReport, str | None, list[str]]:
    """Verify ``log`` as ``custodian audit verify`` does: the report, the first failure
    (None if intact) and the privacy ledger's disagreements (checked for the project's log)."""
    report, failure = verify_trusted(log, project.local_trust_store(), anchor)
    ledger: list[str] = []
    if failure is None and report.first_problem is not None:
        failure = report.first_problem.message
    own = log.path.resolve() == project.audit_log_path.resolve()
    if failure is None and own:
        ledger = _check_privacy_ledger(project, log, report)
        failure = ledger[0] if ledger else None
    if failure is None and own and witnessed:
        problems = witness_failures(project)
        failure = problems[0] if problems else None
    return report, failure, ledger


def witness_failures(project: Project) -> list[str]:
    """One line per log head a committed sign-off witnessed that the project's log does not
    extend: a deleted, truncated or rewritten log shows here (see audits.witness)."""
    witnessed = witnesses(project.signoff_files(), project.people_keys()[0])
    keys = project.local_trust_store().trusted_keys()
    if witnessed and not keys:
        return [
            f"{len(witnessed)} sign-off(s) witnessed the audit log, but no pipeline key is "
            f"trusted to check it against them (was .custodian/ deleted?)"
        ]
    return witness_problems(project.audit_log(), keys, witnessed)


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


def _check_privacy_ledger(project: Project, log: AuditLog, report: VerifyReport) -> list[str]:
    """Each run's steps in the privacy ledger must equal the latest spend the log recorded."""
    # Imported here: the ledger pulls in Opacus and torch, seconds that no other command needs.
    from privacy.ledger import LedgerCorrupted, PrivacyLedger

    ledger = PrivacyLedger(project.privacy_ledger_path)
    try:
        runs = [
            LedgerRunSteps(dataset.dataset_sha256, run.run_id, run.steps)
            for dataset in ledger.summary()
            for run in dataset.runs
        ]
    except LedgerCorrupted as exc:
        return [f"privacy ledger {exc}"]
    return ledger_disagreements(log, report.entries, runs, ledger.path)
