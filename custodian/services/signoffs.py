"""Signing off: sign exactly the artifacts that were reviewed (``custodian signoff``).

The procedure: find the reviewer's key in the committed trust store and their
private key under ``$CUSTODIAN_HOME``; refuse unless ``reports/compliance.json``
exists, is well formed and every gate passed or was waived, and unless every
file still matches ``reports/manifest.json``; hash the signed artifacts and the
gates' evidence; write the DSSE envelope to ``signoffs/`` (commit it) and log
the sign-off in the audit log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from audits.canonical import canonical_sha256
from audits.errors import AuditError
from audits.files import atomic_write_text
from audits.keys import SigningKey, SigningKeyError, load_signing_key
from audits.log import LogFormatError
from audits.manifest import sha256_file
from audits.report_binding import binding_problem
from audits.signoff import (
    ComplianceSummary,
    GateRecord,
    PolicyRecord,
    ReasonCode,
    SignoffPredicate,
    SignoffRefused,
    build_statement,
    envelope_json,
    sign_statement,
)
from audits.trust import TrustedKey, UnknownKeyName
from custodian.params import PolicyParams, load_section
from custodian.project import (
    COMPLIANCE_REPORT,
    MANIFEST,
    REPORT_FILES,
    SIGNED_ARTIFACTS,
    Project,
    private_key_path,
)
from custodian.services import trail
from custodian.services.manifests import artifact_differences, load_manifest
from governance.errors import InputError
from governance.registry import format_validation_error


class UnusableReviewerKey(AuditError):
    """The reviewer's key is unknown, revoked, or not the one the trust store holds (a usage
    error of ``--as``: the CLI reports it against that option)."""


@dataclass(frozen=True)
class SignedOff:
    """A sign-off written: who signed, the file, how many artifacts and gates it covers."""

    reviewer: TrustedKey
    relative: str
    subjects: int
    gates: int


def sign(project: Project, name: str, note: str | None) -> SignedOff:
    """Sign the current artifacts as ``name``; refused while a gate fails or files changed."""
    policy = load_section(PolicyParams, "policy", project.params_path)
    entry, key = reviewer_key(project, name)
    compliance = _passing_compliance(project)
    _require_unchanged_since_manifest(project)
    artifacts = current_artifacts(project)
    missing = [path for path, digest in artifacts.items() if digest is None]
    if missing:
        raise SignoffRefused(f"nothing to sign: {', '.join(missing)} not found; run the pipeline")
    unbound = report_binding_problem(project, artifacts)
    if unbound is not None:
        raise SignoffRefused(f"{ReasonCode.UNBOUND_REPORT.value}: {unbound}")

    active = trail.current()
    witnessed = active.log.current_checkpoint()
    if witnessed is None:
        raise SignoffRefused("the audit log has no signed checkpoint to witness; run audit verify")
    predicate = SignoffPredicate(
        reviewer=entry.name,
        role=entry.role,
        key_fingerprint=entry.fingerprint,
        actor=active.actor,
        signed_at=datetime.now(UTC).replace(microsecond=0),
        note=note,
        git_commit=project.git_commit(),
        policy=PolicyRecord(
            required_roles=tuple(policy.required_signoff_roles),
            sha256=canonical_sha256(policy.model_dump(mode="json")),
        ),
        compliance_passed=True,
        gates=tuple(
            GateRecord(id=gate.id, passed=gate.passed, waived=gate.waived)
            for gate in compliance.gates
        ),
        evidence=_evidence_digests(project, compliance),
        log_checkpoint=witnessed,
    )
    statement = build_statement({k: v for k, v in artifacts.items() if v is not None}, predicate)
    text = envelope_json(sign_statement(statement, key))
    relative, digest = write_envelope(
        project, project.signoff_dir, entry.name, predicate.signed_at, text
    )
    active.decision(
        {
            "signoff": {
                "file": relative,
                "reviewer": entry.name,
                "role": entry.role.value,
                "key_fingerprint": entry.fingerprint,
                "note": predicate.note,
                "subjects": statement.digests(),
            }
        }
    )
    return SignedOff(
        reviewer=entry,
        relative=relative,
        subjects=len(statement.subject),
        gates=len(compliance.gates),
    )


def write_envelope(
    project: Project, directory: Path, prefix: str, signed_at: datetime, text: str
) -> tuple[str, str]:
    """Write a signed envelope atomically as ``<prefix>-<time>-<digest[:8]>.dsse.json`` in
    ``directory`` and record it as an output of the current run; its relative path and
    SHA-256. (The digest in the name keeps two envelopes signed in one second apart.)"""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    stamp = signed_at.strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{prefix}-{stamp}-{digest[:8]}.dsse.json"
    atomic_write_text(path, text)
    relative = path.relative_to(project.root).as_posix()
    trail.current().record_outputs({relative: digest})
    return relative, digest


def current_artifacts(project: Project) -> dict[str, str | None]:
    """SHA-256 of each artifact a sign-off covers, None for one that is missing."""
    return {
        name: sha256_file(project.root / name) if (project.root / name).is_file() else None
        for name in SIGNED_ARTIFACTS
    }


def report_binding_problem(project: Project, artifacts: dict[str, str | None]) -> str | None:
    """Why the compliance pack on disk is not the one the latest report run logged, or None."""
    try:
        return binding_problem(
            project.audit_log().entries(),
            manifest={MANIFEST: artifacts[MANIFEST]},
            files={name: artifacts[name] for name in REPORT_FILES},
        )
    except LogFormatError as exc:
        return f"the audit log cannot be read: {exc}"


def reviewer_key(project: Project, name: str) -> tuple[TrustedKey, SigningKey]:
    """The reviewer's record in the verified trust root and their private key."""
    people, untrusted = project.people_keys()
    if untrusted:
        raise SignoffRefused(f"{ReasonCode.UNTRUSTED_KEY_SET.value}: {untrusted[0]}")
    try:
        entry = people.get(name)
    except UnknownKeyName:
        raise UnusableReviewerKey(
            f"no key named {name!r} in the trust root (custodian keys generate {name} "
            f"--role ROLE, then trust add {name})"
        ) from None
    if entry.revoked:
        raise UnusableReviewerKey(
            f"key {name!r} is revoked ({entry.revoked_reason}); generate a new one"
        )
    try:
        key = load_signing_key(private_key_path(name))
    except SigningKeyError as exc:
        raise UnusableReviewerKey(str(exc)) from None
    if key.fingerprint != entry.fingerprint:
        raise UnusableReviewerKey(
            f"the private key {private_key_path(name)} is not the key the trust store "
            f"holds as {name!r}"
        )
    return entry, key


def _passing_compliance(project: Project) -> ComplianceSummary:
    path = project.root / COMPLIANCE_REPORT
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SignoffRefused(
            f"{COMPLIANCE_REPORT}: not found; run the pipeline (dvc repro) to write it"
        ) from None
    try:
        compliance = ComplianceSummary.model_validate_json(data)
    except ValidationError as exc:
        # A malformed report is an input error (exit 2), not a refusal of the evidence.
        where = format_validation_error(exc, where=COMPLIANCE_REPORT)
        raise InputError(f"{where}; rerun the report stage") from None
    refusal = compliance.refusal(COMPLIANCE_REPORT)
    if refusal is not None:
        raise SignoffRefused(refusal)
    return compliance


def _require_unchanged_since_manifest(project: Project) -> None:
    manifest_path = project.root / MANIFEST
    try:
        manifest = load_manifest(manifest_path)
    except InputError as exc:
        raise SignoffRefused(f"{exc}; the evidence is incomplete") from None
    differences = artifact_differences(project, manifest, manifest_path)
    if differences:
        named = ", ".join(f"{d.path} ({d.kind.value})" for d in differences)
        raise SignoffRefused(
            f"{len(differences)} file(s) differ from {MANIFEST}: {named}; rerun the pipeline "
            f"(dvc repro) before signing"
        )


def _evidence_digests(project: Project, compliance: ComplianceSummary) -> dict[str, str]:
    """SHA-256 of each file or directory a gate names as evidence."""
    digests: dict[str, str] = {}
    for gate in compliance.gates:
        for name in gate.evidence:
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts:
                raise SignoffRefused(
                    f"{COMPLIANCE_REPORT}: gate {gate.id!r}: evidence {name!r} lies outside "
                    f"the project"
                )
            target: Path = project.root / name
            if not target.exists():
                raise SignoffRefused(
                    f"{COMPLIANCE_REPORT}: gate {gate.id!r}: evidence {name} not found"
                )
            digests[name] = trail.path_digest(target)
    return digests
