"""The ingest stage: materialise the datasets the pipeline uses with their provenance.

Every dataset is checked (hash, license, schema) before anything is written:
one refusal, no output. Then all of them go into one atomic directory.
"""

from __future__ import annotations

from pathlib import Path

from audits.files import atomic_directory
from custodian.params import DataParams, PolicyParams
from custodian.services.datasets import data_key, license_policy, write_dataset
from governance.errors import InputError
from governance.ingest import ingest
from governance.provenance import Provenance
from governance.registry import load_registry


def run(
    data: DataParams, policy: PolicyParams, references: list[str], out_dir: Path
) -> tuple[list[Provenance], list[str]]:
    """Ingest the datasets the pipeline uses (``data.dataset`` and the check's
    ``references``) into ``out_dir``; their records and the names of those skipped."""
    entries = load_registry(data.registry)
    if data.dataset not in {e.name for e in entries}:
        raise InputError(f"params.yaml: data.dataset: {data.dataset!r} is not registered")
    used = {data.dataset, *references}
    unknown = sorted(used - {e.name for e in entries})
    if unknown:
        raise InputError(
            f"params.yaml: check.references: {', '.join(map(repr, unknown))} not registered"
        )
    skipped = sorted(e.name for e in entries if e.name not in used)
    policy_ = license_policy(policy)
    ingested = [ingest(entry, policy_, data_key) for entry in entries if entry.name in used]
    with atomic_directory(out_dir) as staging:
        for item in ingested:
            write_dataset(staging, item.provenance.name, item.content, item.provenance)
    return [item.provenance for item in ingested], skipped
