"""NIST AI RMF 1.0 evidence map: each of the 72 subcategories, and what this run evidences of it.

The catalog (``audits/catalogs/nist_ai_rmf_1_0.json``) is versioned data: an
ID, a paraphrase in Custodian's words, a crosswalk to the EU AI Act and
ISO/IEC 42001 Annex A, and the rule saying which kinds of pipeline evidence
speak to it. :func:`map_catalog` turns the rules and this run's evidence into
a status per subcategory:

``evidenced``
    every kind the rule names is present and passed, and either the rule says
    they cover the subcategory fully or a person's signed attestation covers
    the rest (``custodian attest``);
``partial``
    some evidence is present and passed, but people must attest the rest;
``attested``
    the pipeline cannot show it, and a person signed an attestation that it holds;
``attestation_required``
    nothing the pipeline produces can show it (or none of it passed this run),
    and nobody has attested it;
``not_applicable``
    the rule's condition holds, shown by its own evidence.

Each rule states what makes its row evidenced (:meth:`EvidenceRule.evidenced_when`),
and :func:`map_catalog` checks exactly that. Evidence counts only when its
files exist: a subcategory is never marked evidenced without a link to an
artifact on disk or a verified attestation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from audits.errors import AuditError

CATALOG_RESOURCE = "catalogs/nist_ai_rmf_1_0.json"
FUNCTIONS = ("GOVERN", "MAP", "MEASURE", "MANAGE")
_ID = re.compile(r"^(GOVERN|MAP|MEASURE|MANAGE) ([1-9])\.([1-9][0-9]?)$")

SubcategoryId = Annotated[str, StringConstraints(pattern=_ID.pattern)]
# The articles a provider of a high-risk system meets (Chapter III Section 2, quality
# management, corrective action, post-market monitoring and incident reporting), and the
# deployer's duties (Art. 26) where a subcategory is about use.
EuArticle = Literal[
    "Art. 9",
    "Art. 10",
    "Art. 11",
    "Art. 12",
    "Art. 13",
    "Art. 14",
    "Art. 15",
    "Art. 17",
    "Art. 20",
    "Art. 26",
    "Art. 72",
    "Art. 73",
]
IsoControl = Annotated[str, StringConstraints(pattern=r"^A\.([2-9]|10)(\.[0-9]+){1,2}$")]


class CatalogError(AuditError):
    """The catalog file does not parse or breaks one of its invariants."""


class EvidenceKind(StrEnum):
    """A kind of evidence the pipeline produces; the report stage says where, and if it passed."""

    PROVENANCE = "provenance"
    LICENSES = "licenses"
    DATA_VALIDATION = "data_validation"
    LEAKAGE_CHECKS = "leakage_checks"
    PRIVACY_ACCOUNTING = "privacy_accounting"
    PRIVACY_BUDGET = "privacy_budget"
    EMPIRICAL_PRIVACY = "empirical_privacy"
    UTILITY = "utility"
    CALIBRATION = "calibration"
    FAIRNESS = "fairness"
    ROBUSTNESS = "robustness"
    TRAINING_RECORD = "training_record"
    AUDIT_LOG = "audit_log"
    MANIFEST = "manifest"
    POLICY = "policy"
    MODEL_CARD = "model_card"
    DATASHEETS = "datasheets"


class Coverage(StrEnum):
    FULL = "full"
    PARTIAL = "partial"


class Status(StrEnum):
    EVIDENCED = "evidenced"
    PARTIAL = "partial"
    ATTESTED = "attested"
    ATTESTATION_REQUIRED = "attestation_required"
    NOT_APPLICABLE = "not_applicable"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Crosswalk(_Frozen):
    eu_ai_act: tuple[EuArticle, ...] = ()
    iso_42001: tuple[IsoControl, ...] = ()


class NotApplicable(_Frozen):
    when: EvidenceKind
    reason: str = Field(min_length=10)


class EvidenceRule(_Frozen):
    kinds: tuple[EvidenceKind, ...] = ()
    coverage: Coverage | None = None
    note: str = Field(min_length=10)
    not_applicable: NotApplicable | None = None

    @model_validator(mode="after")
    def _coverage_iff_kinds(self) -> EvidenceRule:
        if bool(self.kinds) != (self.coverage is not None):
            raise ValueError("a rule names a coverage exactly when it names evidence kinds")
        return self

    @property
    def needs_person(self) -> bool:
        """Whether a person's attestation is part of what evidences the subcategory."""
        return self.coverage is not Coverage.FULL

    def evidenced_when(self) -> str:
        """What makes the row evidenced, in one line: the rule :func:`map_catalog` applies."""
        kinds = ", ".join(kind.value for kind in self.kinds)
        if self.coverage is Coverage.FULL:
            return f"evidenced when all of {kinds} exist and pass"
        if self.kinds:
            return (
                f"evidenced when all of {kinds} exist and pass and a person's signed "
                "attestation covers the rest"
            )
        return "attested when a person signs an attestation; the pipeline cannot show it"


class Subcategory(_Frozen):
    id: SubcategoryId
    summary: str = Field(min_length=20)
    crosswalk: Crosswalk
    evidence: EvidenceRule

    @property
    def function(self) -> str:
        return self.id.split()[0]


class Catalog(_Frozen):
    catalog: Literal["nist-ai-rmf"]
    version: Annotated[str, StringConstraints(pattern=r"^\d+\.\d+\.\d+$")]
    framework: str
    framework_version: Literal["1.0"]
    source: str
    note: str
    subcategories: tuple[Subcategory, ...]

    @model_validator(mode="after")
    def _unique_and_ordered(self) -> Catalog:
        ids = [item.id for item in self.subcategories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate subcategory id(s): {', '.join(duplicates)}")
        if ids != sorted(ids, key=_order):
            raise ValueError("subcategories must be in framework order")
        return self


@dataclass(frozen=True)
class Evidence:
    """Where one kind of evidence lies (paths relative to the project) and whether it passed."""

    kind: EvidenceKind
    paths: tuple[str, ...]
    passed: bool
    detail: str = ""

    @classmethod
    def at(
        cls,
        root: Path,
        kind: EvidenceKind,
        paths: Iterable[str],
        *,
        passed: bool = True,
        detail: str = "",
    ) -> Evidence:
        """Evidence whose files must all exist under ``root``; a missing one fails it."""
        named = tuple(sorted(set(paths)))
        missing = [path for path in named if not (root / path).exists()]
        if not named or missing:
            why = f"missing: {', '.join(missing)}" if missing else "no files"
            return cls(kind, tuple(p for p in named if p not in missing), False, why)
        return cls(kind, named, passed, detail)


@dataclass(frozen=True)
class Attested:
    """A verified attestation of one subcategory: who signed it, when, and its file."""

    subcategory: str
    file: str
    attester: str
    role: str
    signed_at: str


class MappedSubcategory(_Frozen):
    """One row of the evidence map in ``compliance.json``."""

    id: SubcategoryId
    function: str
    summary: str
    status: Status
    evidence: tuple[str, ...]
    crosswalk: Crosswalk
    note: str
    evidenced_when: str = ""
    # Whether a person's attestation is part of the rule (custodian attest accepts it).
    needs_person: bool = False
    attested_by: str | None = None


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog shipped with the package (or the one at ``path``), validated."""
    where = str(path) if path is not None else f"audits/{CATALOG_RESOURCE}"
    try:
        if path is None:
            text = resources.files("audits").joinpath(CATALOG_RESOURCE).read_text("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        return Catalog.model_validate(json.loads(text))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{where}: cannot read the catalog: {exc}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise CatalogError(f"{where}: {field}: {error['msg']}") from None


def map_catalog(
    catalog: Catalog,
    evidence: Mapping[EvidenceKind, Evidence],
    attested: Mapping[str, Attested] | None = None,
) -> list[MappedSubcategory]:
    """Every subcategory of ``catalog`` with its status for the evidence of this run.

    ``attested``: subcategory id -> its verified attestation (only those that verified).
    """
    attested = attested or {}
    return [_map_one(item, evidence, attested.get(item.id)) for item in catalog.subcategories]


def attestable_ids(catalog: Catalog | None = None) -> frozenset[str]:
    """The subcategories a person's attestation speaks to: those not fully evidenced by rule."""
    catalog = catalog or load_catalog()
    return frozenset(item.id for item in catalog.subcategories if item.evidence.needs_person)


def status_counts(rows: Iterable[MappedSubcategory]) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    for row in rows:
        counts[row.status.value] += 1
    return counts


def _map_one(
    item: Subcategory, evidence: Mapping[EvidenceKind, Evidence], attested: Attested | None
) -> MappedSubcategory:
    rule = item.evidence
    if not rule.needs_person:
        attested = None  # nothing for a person to add: the row stands on the pipeline's evidence

    def row(status: Status, paths: Iterable[str], note: str) -> MappedSubcategory:
        signed = (
            f"{attested.attester} ({attested.role}), {attested.signed_at}" if attested else None
        )
        return MappedSubcategory(
            id=item.id,
            function=item.function,
            summary=item.summary,
            status=status,
            evidence=tuple(sorted(set(paths))),
            crosswalk=item.crosswalk,
            note=note,
            evidenced_when=rule.evidenced_when(),
            needs_person=rule.needs_person,
            attested_by=signed,
        )

    if rule.not_applicable is not None:
        shown = evidence.get(rule.not_applicable.when)
        if shown is not None and shown.passed:
            return row(Status.NOT_APPLICABLE, shown.paths, rule.not_applicable.reason)
    passed = [evidence[k] for k in rule.kinds if k in evidence and evidence[k].passed]
    failed = [k for k in rule.kinds if k not in evidence or not evidence[k].passed]
    note = rule.note
    if failed:
        note += " Not passed this run: " + "; ".join(_why(k, evidence.get(k)) for k in failed) + "."
    if not rule.kinds:
        if attested is not None:
            return row(Status.ATTESTED, (), note)
        return row(Status.ATTESTATION_REQUIRED, (), note)
    if not passed:
        return row(Status.ATTESTATION_REQUIRED, (), note)
    full = not failed and (rule.coverage is Coverage.FULL or attested is not None)
    paths = [path for item_evidence in passed for path in item_evidence.paths]
    return row(Status.EVIDENCED if full else Status.PARTIAL, paths, note)


def _why(kind: EvidenceKind, found: Evidence | None) -> str:
    if found is None:
        return f"{kind.value} (not produced)"
    return f"{kind.value} ({found.detail or 'failed'})"


def _order(subcategory_id: str) -> tuple[int, int, int]:
    match = _ID.match(subcategory_id)
    if match is None:
        return (len(FUNCTIONS), 0, 0)
    function, category, number = match.groups()
    return (FUNCTIONS.index(function), int(category), int(number))
