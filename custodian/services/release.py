"""The deployment gate (``custodian release check``).

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

from dataclasses import dataclass
from typing import Any

from audits.attestation import AttestationCheck
from audits.errors import AuditError
from audits.signoff import Reason, ReasonCode, SignoffCheck, review_signoffs
from audits.trust import KeyRole
from custodian.params import PolicyParams, load_section
from custodian.project import MANIFEST, Project
from custodian.services.attest import review_project_attestations
from custodian.services.audit_log import verify_project_log, witness_failures
from custodian.services.manifests import artifact_differences, load_manifest
from custodian.services.signoffs import current_artifacts, report_binding_problem
from governance.errors import InputError


class ReleaseBlocked(AuditError):
    """The release gate said no (exit 1)."""


@dataclass(frozen=True)
class ReleaseReview:
    """The gate's verdict: every reason it is blocked (none: it passes) and what it read."""

    reasons: list[Reason]
    signoffs: list[SignoffCheck]
    roles: list[KeyRole]
    attestations: list[AttestationCheck]
    required_attestations: list[str]
    artifacts: dict[str, str | None]

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": [reason.model_dump(mode="json") for reason in self.reasons],
            "signoffs": [check.model_dump(mode="json") for check in self.signoffs],
            "required_roles": [role.value for role in self.roles],
            "required_attestations": self.required_attestations,
            "attestations": [check.model_dump(mode="json") for check in self.attestations],
            "artifacts": self.artifacts,
        }

    def require_passed(self) -> None:
        if self.reasons:
            codes = sorted({reason.code.value for reason in self.reasons})
            raise ReleaseBlocked(
                f"release blocked by {len(self.reasons)} reason(s): {', '.join(codes)}"
            )


def review(project: Project) -> ReleaseReview:
    """Every reason the current artifacts may not be released, not just the first."""
    policy = load_section(PolicyParams, "policy", project.params_path)
    roles = policy.required_signoff_roles
    artifacts = current_artifacts(project)
    files = project.signoff_files()
    people, untrusted = project.people_keys()
    signed = review_signoffs(files, artifacts, roles, people)
    attestations = review_project_attestations(project, policy.required_attestations)
    reasons = [
        *(Reason(code=ReasonCode.UNTRUSTED_KEY_SET, message=line) for line in untrusted),
        *signed.reasons,
        *attestations.reasons,
        *_manifest_reasons(project),
        *_binding_reasons(project, artifacts),
        *_log_reasons(project),
        *_witness_reasons(project),
    ]
    return ReleaseReview(
        reasons=reasons,
        signoffs=list(signed.signoffs),
        roles=list(roles),
        attestations=list(attestations.checks),
        required_attestations=list(policy.required_attestations),
        artifacts=artifacts,
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
