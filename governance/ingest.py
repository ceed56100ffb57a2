"""Ingestion: turn a registered dataset into verified bytes plus a provenance record.

The content must hash to the registered SHA-256, its license must pass policy,
and the file must have exactly the declared columns and row count. Anything
else is refused; nothing is written by this module. A sealed dataset is
decrypted in memory and checked the same way; its plaintext never touches disk.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from governance.errors import InputError, PolicyViolation
from governance.licenses import IntendedUse, Obligation, evaluate_license
from governance.provenance import Provenance, SourceDeclaration
from governance.registry import RegisteredDataset
from governance.storage import KeyProvider, unseal
from governance.tables import read_csv_bytes, sha256_bytes


class ProvenanceMismatch(PolicyViolation):
    """The data no longer matches what its provenance record says it is."""


@dataclass(frozen=True)
class LicensePolicy:
    intended_use: IntendedUse
    allowed: frozenset[str]
    approved_refs: dict[str, str]

    def obligations(self, expression: str, dataset: str) -> frozenset[Obligation]:
        """What ``dataset``'s license ``expression`` obliges its users to; refused
        (:class:`PolicyViolation`) where this policy does not allow it."""
        return evaluate_license(
            expression,
            dataset=dataset,
            intended_use=self.intended_use,
            allowed=self.allowed,
            approved_refs=self.approved_refs,
        )


@dataclass(frozen=True)
class IngestedDataset:
    content: bytes  # plaintext, whatever form the registered file is stored in
    provenance: Provenance


def ingest(entry: RegisteredDataset, policy: LicensePolicy, key: KeyProvider) -> IngestedDataset:
    record = entry.record
    try:
        obligations = policy.obligations(record.license, record.name)
    except PolicyViolation as err:
        raise PolicyViolation(f"{entry.declared_in}: {err}") from None
    where = str(entry.data_path or record.source)
    content = entry.read_bytes()
    if isinstance(record, Provenance):
        content = unseal(content, record, key, where=where)
    actual = sha256_bytes(content)
    if actual != record.sha256:
        raise ProvenanceMismatch(
            f"{entry.declared_in}: sha256: content hashes to {actual[:12]}..., "
            f"the record says {record.sha256[:12]}... (the data changed; re-register it)"
        )
    frame = read_csv_bytes(content, where=where)
    declared = [c.name for c in record.columns]
    if list(frame.columns) != declared:
        missing = [c for c in declared if c not in frame.columns]
        extra = [c for c in frame.columns if c not in declared]
        raise InputError(
            f"{entry.declared_in}: columns: file differs from the declared schema "
            f"(missing: {missing or 'none'}; undeclared: {extra or 'none'})"
        )
    if len(frame) != record.rows:
        raise InputError(
            f"{entry.declared_in}: rows: file has {len(frame)}, the record says {record.rows}"
        )
    provenance = Provenance.model_validate(
        {**_provenance(entry).model_dump(), "obligations": sorted(obligations)}
    )
    return IngestedDataset(content, provenance)


def _provenance(entry: RegisteredDataset) -> Provenance:
    record = entry.record
    if isinstance(record, Provenance):
        return record
    assert isinstance(record, SourceDeclaration)
    return record.provenance(source_version=_package_version(record.source))


def _package_name(source: str) -> str:
    return source.removeprefix("package://").partition("/")[0]


def _package_version(source: str) -> str:
    name = _package_name(source)
    return f"{name} {importlib.metadata.version(name)}"
