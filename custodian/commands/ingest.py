"""``custodian ingest``: materialise the datasets the pipeline uses, with their provenance.

Those are ``data.dataset`` and the ``check.references``; another registration, even a
refused one (a license the policy does not allow), does not stop the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import click

from audits.files import atomic_directory
from custodian.commands.datasets import data_key, write_dataset
from custodian.params import CheckParams, DataParams, PolicyParams, load_section
from governance.errors import InputError
from governance.ingest import LicensePolicy, ingest
from governance.registry import load_registry


def license_policy() -> LicensePolicy:
    """params.yaml's license policy, as ingest and ``data add`` both apply it."""
    policy = load_section(PolicyParams, "policy")
    return LicensePolicy(
        intended_use=policy.intended_use,
        allowed=frozenset(policy.allowed_licenses),
        approved_refs=dict(policy.approved_license_refs),
    )


@click.command("ingest")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for <name>.csv (.csv.enc if encrypted) and <name>.provenance.json.",
)
def ingest_command(out_dir: Path) -> None:
    """Verify hashes and licenses of the datasets the pipeline uses and materialise them."""
    data = load_section(DataParams, "data")
    policy = license_policy()
    entries = load_registry(data.registry)
    if data.dataset not in {e.name for e in entries}:
        raise InputError(f"params.yaml: data.dataset: {data.dataset!r} is not registered")
    used = {data.dataset, *load_section(CheckParams, "check").references}
    unknown = sorted(used - {e.name for e in entries})
    if unknown:
        raise InputError(
            f"params.yaml: check.references: {', '.join(map(repr, unknown))} not registered"
        )
    skipped = sorted(e.name for e in entries if e.name not in used)
    # Every used dataset is checked before anything is written: one refusal, no output.
    ingested = [ingest(entry, policy, data_key) for entry in entries if entry.name in used]
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
    if skipped:
        click.echo(
            f"not ingested (not data.dataset or a check.references entry, so not checked): "
            f"{', '.join(skipped)}"
        )
