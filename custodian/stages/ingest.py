"""The ingest stage: materialise every registered dataset with its provenance.

Every dataset is checked (hash, license, schema) before anything is written:
one refusal, no output. Then all of them go into one atomic directory.
"""

from __future__ import annotations

from pathlib import Path

from audits.files import atomic_directory
from custodian.params import DataParams, PolicyParams
from custodian.services.datasets import data_key, write_dataset
from governance.errors import InputError
from governance.ingest import LicensePolicy, ingest
from governance.provenance import Provenance
from governance.registry import load_registry


def run(data: DataParams, policy: PolicyParams, out_dir: Path) -> list[Provenance]:
    """Ingest every dataset ``data.registry`` registers into ``out_dir``; their records."""
    license_policy = LicensePolicy(
        intended_use=policy.intended_use,
        allowed=frozenset(policy.allowed_licenses),
        approved_refs=dict(policy.approved_license_refs),
    )
    entries = load_registry(data.registry)
    if data.dataset not in {e.name for e in entries}:
        raise InputError(f"params.yaml: data.dataset: {data.dataset!r} is not registered")
    ingested = [ingest(entry, license_policy, data_key) for entry in entries]
    with atomic_directory(out_dir) as staging:
        for item in ingested:
            write_dataset(staging, item.provenance.name, item.content, item.provenance)
    return [item.provenance for item in ingested]
