"""``custodian ingest``: materialise the datasets the pipeline uses, with their provenance.

Those are ``data.dataset`` and the ``check.references``; another registration, even a
refused one (a license the policy does not allow), does not stop the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import CheckParams, DataParams, PolicyParams, load_section
from custodian.stages import ingest


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
    policy = load_section(PolicyParams, "policy")
    references = load_section(CheckParams, "check").references
    records, skipped = ingest.run(data, policy, references, out_dir)
    for record in records:
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
