"""``custodian ingest``: materialise every registered dataset with its provenance."""

from __future__ import annotations

from pathlib import Path

import click

from audits.files import atomic_directory
from custodian.commands.datasets import data_key, write_dataset
from custodian.params import DataParams, PolicyParams, load_section
from governance.errors import InputError
from governance.ingest import LicensePolicy, ingest
from governance.registry import load_registry


@click.command("ingest")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for <name>.csv (.csv.enc if encrypted) and <name>.provenance.json.",
)
def ingest_command(out_dir: Path) -> None:
    """Verify hashes and licenses of all registered datasets and materialise them."""
    data = load_section(DataParams, "data")
    policy = load_section(PolicyParams, "policy")
    license_policy = LicensePolicy(
        intended_use=policy.intended_use,
        allowed=frozenset(policy.allowed_licenses),
        approved_refs=dict(policy.approved_license_refs),
    )
    entries = load_registry(data.registry)
    if data.dataset not in {e.name for e in entries}:
        raise InputError(f"params.yaml: data.dataset: {data.dataset!r} is not registered")
    # Every dataset is checked before anything is written: one refusal, no output.
    ingested = [ingest(entry, license_policy, data_key) for entry in entries]
    with atomic_directory(out_dir) as staging:
        for item in ingested:
            write_dataset(staging, item.provenance.name, item.content, item.provenance)
    for item in ingested:
        record = item.provenance
        obligations = ", ".join(record.obligations) or "none"
        sealed = f", encrypted (key {record.encryption.key_id})" if record.encryption else ""
        click.echo(
            f"ingested {record.name}: {record.rows} rows, {record.license} "
            f"(obligations: {obligations}), sha256 {record.sha256[:12]}{sealed}"
        )
