"""``custodian data add|list|show|schema|keygen|rekey``: the dataset registry
(:mod:`custodian.services.registry`).

``data add --encrypt`` stores a sensitive dataset sealed (``governance.storage``),
so that the DVC cache and every remote hold only ciphertext; ``data keygen``
writes a data key file and ``data rekey`` moves a sealed dataset to a new key.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from custodian.services import registry
from custodian.services.datasets import data_key
from custodian.services.registry import registered, summaries
from governance.provenance import provenance_json_schema


@click.group()
def data() -> None:
    """Register datasets and inspect the registry."""


@data.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--license", "license_", required=True, help="SPDX license expression.")
@click.option("--source", required=True, help="Where the data came from (URI).")
@click.option("--citation", help="How to cite the data.")
@click.option("--name", help="Registry name (default: the file name without extension).")
@click.option("--identifier", help="Column identifying a person or entity.")
@click.option(
    "--population",
    help="The people the rows are about (e.g. rand-hie-participants): datasets of one "
    "population share one lifetime privacy budget. Default: the population of an earlier "
    "version under the same --name. Required when the identifiers overlap a registered "
    "population's.",
)
@click.option("--sensitive", help="Comma-separated sensitive-attribute columns.")
@click.option("--label", help="Label column.")
@click.option("--time", "time_", help="Time column.")
@click.option("--exclude", help="Comma-separated columns never trained on (e.g. encode the label).")
@click.option(
    "--text",
    help="Comma-separated free-text columns: never trained on, values never recorded "
    "(recognised without it when values are long, varied sentences).",
)
@click.option(
    "--pii",
    help="Comma-separated columns of direct personal data (names, emails, phone numbers): "
    "never trained on, values never recorded.",
)
@click.option("--intended-use", help="What the data may be used for.")
@click.option("--restriction", multiple=True, help="A use restriction (repeatable).")
@click.option(
    "--encrypt",
    is_flag=True,
    help="Store the data sealed (AES-256-GCM) as <registry>/<name>.csv.enc under the data key "
    "of CUSTODIAN_DATA_KEY_FILE or CUSTODIAN_DATA_KEY; PATH may then lie outside the project.",
)
@click.option(
    "--remove-plaintext",
    is_flag=True,
    help="With --encrypt: delete PATH (unlink, not a secure erase) once the ciphertext is "
    "registered. Required when PATH lies inside the project.",
)
def add(path: Path, encrypt: bool, remove_plaintext: bool, **options) -> None:
    """Track PATH with DVC and record its provenance in the .dvc file's meta.

    The license must pass the policy in params.yaml (as at ingest). No value of a
    free-text, identifier or personal-data column is recorded, only counts and formats.
    """
    if remove_plaintext and not encrypt:
        raise click.UsageError("--remove-plaintext only goes with --encrypt")
    done = registry.register(path, encrypt=encrypt, remove_plaintext=remove_plaintext, **options)
    record = done.record
    for note in done.notes:
        click.echo(f"{path}: {note}")
    sealed = f", encrypted under data key {data_key().key_id}" if encrypt else ""
    click.echo(
        f"registered {record.name} ({record.license}, {record.rows} rows{sealed}) in "
        f"{done.dvc_file}"
    )
    if remove_plaintext:
        click.echo(f"removed the plaintext {path} (unlinked, not securely erased)")
    elif encrypt:
        click.echo(f"the plaintext {path} is untouched: delete it once you no longer need it")


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List registered datasets with license, hash and column roles."""
    entries = summaries()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{'NAME':<16} {'LICENSE':<28} {'ROWS':>8}  {'SHA256':<14} ROLES")
    for item in entries:
        roles = "; ".join(f"{k}={','.join(v)}" for k, v in item["roles"].items() if v)
        sealed = f" [encrypted, key {item['encryption']['key_id']}]" if item["encryption"] else ""
        click.echo(
            f"{item['name']:<16} {item['license']:<28} {item['rows']:>8}  "
            f"{item['sha256'][:12]:<14} {roles}{sealed}"
        )


@data.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(name: str, as_json: bool) -> None:
    """Show one dataset's full provenance record."""
    entry = registered(name)
    record = entry.record.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps({**record, "declared_in": str(entry.declared_in)}, indent=2))
        return
    for key, value in record.items():
        if key != "columns":
            click.echo(f"{key:>15}: {value}")
    click.echo(f"{'columns':>15}:")
    for column in entry.record.columns:
        bounds = "" if column.minimum is None else f" [{column.minimum:g}, {column.maximum:g}]"
        pii = f" pii={','.join(column.pii)}" if column.pii else ""
        click.echo(f"{'':>17}{column.name:<12} {column.type:<8} {column.role:<10}{bounds}{pii}")


@data.command("schema")
def schema() -> None:
    """Print the JSON Schema of provenance records."""
    click.echo(json.dumps(provenance_json_schema(), indent=2, sort_keys=True))


@data.command("keygen")
@click.argument("path", type=click.Path(path_type=Path))
def keygen(path: Path) -> None:
    """Write a new random data key to PATH (mode 0600), outside the project."""
    key = registry.keygen(path)
    click.echo(f"wrote data key {key.key_id} to {path} (mode 0600); back it up and keep it secret")


@data.command("rekey")
@click.argument("name")
def rekey(name: str) -> None:
    """Re-encrypt sealed dataset NAME from the current data key to the new one.

    The current key comes from CUSTODIAN_DATA_KEY_FILE or CUSTODIAN_DATA_KEY,
    the new one from CUSTODIAN_NEW_DATA_KEY_FILE or CUSTODIAN_NEW_DATA_KEY.
    Safe to run again after an interruption.
    """
    old, new = registry.rekey(name)
    click.echo(
        f"re-encrypted {name} from data key {old.key_id} to {new.key_id}; run `dvc repro` with "
        "the new key to re-encrypt its derived data, then commit and `dvc push`"
    )
