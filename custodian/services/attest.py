"""Attestations (``custodian attest NIST-ID --as NAME``): a person's signed word for a subcategory.

The procedure: find the subcategory in the catalog (refused if the pipeline's evidence
covers it fully: there is nothing to attest); find the person's key as ``signoff`` does;
sign what the attestation binds (the subcategory's wording, and the current model where
the catalog also cites pipeline evidence for it); write the DSSE envelope to
``attestations/`` (commit it) and log it in the audit log. The report stage shows every
attestation on the page; ``release check`` requires those ``policy.required_attestations``
names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from audits.attestation import (
    MODEL_SUBJECT,
    AttestationError,
    AttestationPredicate,
    AttestationReview,
    envelope_json,
    find_subcategory,
    required_subjects,
    review_attestations,
    sign_attestation,
)
from audits.errors import AuditError
from audits.manifest import sha256_file
from audits.nist import Catalog, load_catalog
from audits.trust import TrustedKey
from custodian.project import Project
from custodian.services import trail
from custodian.services.signoffs import reviewer_key, write_envelope

ATTESTATION_PATTERN = "*.dsse.json"


class UnknownSubcategory(AuditError):
    """The subcategory named is not one a person can attest (a usage error of SUBCATEGORY)."""


@dataclass(frozen=True)
class Attested:
    subcategory: str
    attester: TrustedKey
    relative: str


def attest(project: Project, subcategory: str, name: str, note: str | None) -> Attested:
    """Sign an attestation of ``subcategory`` as ``name``; write it under ``attestations/``."""
    catalog = load_catalog()
    try:
        item = find_subcategory(catalog, subcategory)
        wanted = required_subjects(item, _model_digest(project))
    except AttestationError as exc:
        raise UnknownSubcategory(str(exc)) from None
    missing = [subject for subject, digest in wanted.items() if digest is None]
    if missing:
        raise AttestationError(
            f"{item.id} speaks of the model, and {', '.join(missing)} is not there; run the "
            "pipeline first"
        )
    entry, key = reviewer_key(project, name)
    active = trail.current()
    predicate = AttestationPredicate(
        subcategory=item.id,
        attester=entry.name,
        role=entry.role,
        key_fingerprint=entry.fingerprint,
        actor=active.actor,
        signed_at=datetime.now(UTC).replace(microsecond=0),
        note=note,
        catalog_version=catalog.version,
        git_commit=project.git_commit(),
    )
    subjects = {subject: digest for subject, digest in wanted.items() if digest is not None}
    text = envelope_json(sign_attestation(subjects, predicate, key))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", item.id).strip("-")
    relative, _ = write_envelope(
        project, project.attestation_dir, f"{slug}-{entry.name}", predicate.signed_at, text
    )
    active.decision(
        {
            "attestation": {
                "file": relative,
                "subcategory": item.id,
                "attester": entry.name,
                "role": entry.role.value,
                "key_fingerprint": entry.fingerprint,
                "note": note,
                "subjects": subjects,
            }
        }
    )
    return Attested(subcategory=item.id, attester=entry, relative=relative)


def review_project_attestations(
    project: Project, required: Sequence[str], catalog: Catalog | None = None
) -> AttestationReview:
    """Every attestation under ``attestations/``, checked against the current catalog and model."""
    catalog = catalog or load_catalog()
    model = _model_digest(project)
    current = {
        item.id: required_subjects(item, model)
        for item in catalog.subcategories
        if item.evidence.needs_person
    }
    files = {
        path.relative_to(project.root).as_posix(): path.read_bytes()
        for path in sorted(project.attestation_dir.glob(ATTESTATION_PATTERN))
    }
    return review_attestations(files, current, required, project.people_keys()[0])


def _model_digest(project: Project) -> str | None:
    model = project.root / MODEL_SUBJECT
    return sha256_file(model) if model.is_file() else None
