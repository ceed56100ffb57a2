"""``custodian release check [--json]``: the deployment gate.

Exit 0 only if every role ``policy.required_signoff_roles`` names has signed,
each by a different person and with a key the committed trust store trusts for
that role, exactly the artifacts on disk now; if every subcategory
``policy.required_attestations`` names has a current, verified attestation
(``custodian attest``); if nothing changed since
``reports/manifest.json``; and if the audit log verifies. Otherwise exit 1,
listing every reason, not just the first. It reads and writes nothing else:
running the gate is not an event in the log.
"""

from __future__ import annotations

import json

import click

from audits.errors import AuditError
from audits.signoff import Reason, ReasonCode, SignoffStatus, review_signoffs
from custodian.commands.attest import review_project_attestations
from custodian.commands.audit import verify_project_log, witness_failures
from custodian.commands.manifest import artifact_differences, load_manifest
from custodian.commands.signoff import current_artifacts, report_binding_problem
from custodian.params import PolicyParams, load_section
from custodian.project import MANIFEST, Project
from governance.errors import InputError


class ReleaseBlocked(AuditError):
    """The release gate said no (exit 1)."""


@click.group("release")
def release() -> None:
    """Decide whether the current artifacts may be released."""


@release.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable verdict on stdout.")
def check_command(as_json: bool) -> None:
    """Exit 0 if the required roles signed exactly the current artifacts and the log verifies."""
    project = Project.discover()
    policy = load_section(PolicyParams, "policy", project.params_path)
    roles = policy.required_signoff_roles
    artifacts = current_artifacts(project)
    files = project.signoff_files()
    people, untrusted = project.people_keys()
    review = review_signoffs(files, artifacts, roles, people)
    attestations = review_project_attestations(project, policy.required_attestations)
    reasons = [
        *(Reason(code=ReasonCode.UNTRUSTED_KEY_SET, message=line) for line in untrusted),
        *review.reasons,
        *attestations.reasons,
        *_manifest_reasons(project),
        *_binding_reasons(project, artifacts),
        *_log_reasons(project),
        *_witness_reasons(project),
    ]

    if as_json:
        verdict = {
            "passed": not reasons,
            "reasons": [reason.model_dump(mode="json") for reason in reasons],
            "signoffs": [check.model_dump(mode="json") for check in review.signoffs],
            "required_roles": [role.value for role in roles],
            "required_attestations": list(policy.required_attestations),
            "attestations": [check.model_dump(mode="json") for check in attestations.checks],
            "artifacts": artifacts,
        }
        click.echo(json.dumps(verdict, indent=2))
    else:
        for check in review.signoffs:
            who = f" ({check.reviewer} as {check.role.value}, actor {check.actor})"
            click.echo(f"sign-off {check.file}: {check.status.value}{who if check.role else ''}")
        for attested in attestations.checks:
            by = f" ({attested.subcategory} by {attested.attester})" if attested.attester else ""
            click.echo(f"attestation {attested.file}: {attested.status.value}{by}")
        for reason in reasons:
            click.echo(f"blocked: {reason}")
    if reasons:
        codes = sorted({reason.code.value for reason in reasons})
        raise ReleaseBlocked(f"release blocked by {len(reasons)} reason(s): {', '.join(codes)}")
    if not as_json:
        counted = {c.role: c.reviewer for c in review.signoffs if c.status is SignoffStatus.COUNTED}
        signers = ", ".join(f"{role.value}: {counted[role]}" for role in roles)
        required = policy.required_attestations
        attested = f"; attested: {', '.join(required)}" if required else ""
        click.echo(
            f"release check passed: {signers}{attested}; artifacts unchanged; audit log intact"
        )


def _manifest_reasons(project: Project) -> list[Reason]:
    """Every file that changed since the manifest (whose own digest the sign-offs cover)."""
    manifest_path = project.root / MANIFEST
    if not manifest_path.is_file():
        return []  # reported as a missing artifact
    try:
        manifest = load_manifest(manifest_path)
    except InputError as exc:
        return [Reason(code=ReasonCode.CHANGED_ARTIFACT, message=str(exc))]
    return [
        Reason(code=ReasonCode.CHANGED_ARTIFACT, message=f"since {MANIFEST}: {difference}")
        for difference in artifact_differences(project, manifest, manifest_path)
    ]


def _binding_reasons(project: Project, artifacts: dict[str, str | None]) -> list[Reason]:
    problem = report_binding_problem(project, artifacts)
    return [] if problem is None else [Reason(code=ReasonCode.UNBOUND_REPORT, message=problem)]


def _log_reasons(project: Project) -> list[Reason]:
    failure = verify_project_log(project)
    if failure is None:
        return []
    return [Reason(code=ReasonCode.LOG_TAMPERED, message=f"audit log: {failure}")]


def _witness_reasons(project: Project) -> list[Reason]:
    return [
        Reason(code=ReasonCode.LOG_NOT_EXTENDING_CHECKPOINT, message=line)
        for line in witness_failures(project)
    ]
