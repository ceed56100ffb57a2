"""``custodian ingest``: materialise every registered dataset with its provenance."""

from __future__ import annotations

from pathlib import Path

import click

from custodian.params import DataParams, PolicyParams, load_section
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
    """Verify hashes and licenses of all registered datasets and materialise them."""
    data = load_section(DataParams, "data")
    policy = load_section(PolicyParams, "policy")
    for record in ingest.run(data, policy, out_dir):
        obligations = ", ".join(record.obligations) or "none"
        sealed = f", encrypted (key {record.encryption.key_id})" if record.encryption else ""
        click.echo(
            f"ingested {record.name}: {record.rows} rows, {record.license} "
            f"(obligations: {obligations}), sha256 {record.sha256[:12]}{sealed}"
        )
