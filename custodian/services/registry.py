"""``custodian data add|list|show|schema|keygen|rekey``: the dataset registry.

``data add --encrypt`` stores a sensitive dataset sealed (``governance.storage``),
so that the DVC cache and every remote hold only ciphertext; ``data keygen``
writes a data key file and ``data rekey`` moves a sealed dataset to a new key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from audits.files import atomic_write_bytes, atomic_write_text
from custodian.commands.datasets import data_key
from custodian.params import DataParams, load_section
from custodian.project import Project
from governance.errors import InputError
from governance.ingest import ProvenanceMismatch
from governance.provenance import ColumnRole, Encryption, Provenance, provenance_json_schema
from governance.registry import (
    META_KEY,
    RegisteredDataset,
    find_dataset,
    format_validation_error,
    load_registry,
)
from governance.storage import SEALED_SUFFIX, seal
from governance.tables import infer_columns, read_csv_bytes, sha256_bytes
from privacy.encryption import (
    NEW_DATA_KEY,
    DataKey,
    decrypt_bytes,
    load_key,
    read_header,
    write_key_file,
)
from privacy.errors import WrongKey


def _columns_option(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


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
@click.option("--sensitive", help="Comma-separated sensitive-attribute columns.")
@click.option("--label", help="Label column.")
@click.option("--time", "time_", help="Time column.")
@click.option("--exclude", help="Comma-separated columns never trained on (e.g. encode the label).")
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
def add(
    path: Path,
    license_: str,
    source: str,
    citation: str | None,
    name: str | None,
    identifier: str | None,
    sensitive: str | None,
    label: str | None,
    time_: str | None,
    exclude: str | None,
    intended_use: str | None,
    restriction: tuple[str, ...],
    encrypt: bool,
    remove_plaintext: bool,
) -> None:
    """Track PATH with DVC and record its provenance in the .dvc file's meta."""
    registry = load_section(DataParams, "data").registry
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if remove_plaintext and not encrypt:
        raise click.UsageError("--remove-plaintext only goes with --encrypt")
    if encrypt:
        _check_plaintext_location(path, remove_plaintext)
    elif path.resolve().parent != registry.resolve():
        raise InputError(
            f"{path}: registered datasets live directly in {registry}/; move the file there"
        )
    roles = _roles(identifier, sensitive, label, time_, exclude)
    content = path.read_bytes()
    frame = read_csv_bytes(content, where=str(path))
    try:
        columns = infer_columns(frame, roles)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    try:
        record = Provenance(
            name=name or path.stem.lower(),
            source=source,
            citation=citation,
            license=license_,
            retrieved_at=datetime.now(UTC).replace(microsecond=0),
            sha256=sha256_bytes(content),
            rows=len(frame),
            columns=columns,
            intended_use=intended_use,
            restrictions=list(restriction),
            encryption=Encryption(key_id=data_key().key_id) if encrypt else None,
        )
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="custodian data add")) from None
    tracked = registry / f"{record.name}.csv{SEALED_SUFFIX}" if encrypt else path
    entries = load_registry(registry)
    if encrypt:
        _check_not_registered_in_plaintext(path, entries)
    others = [e for e in entries if e.name == record.name]
    if others and others[0].data_path != tracked:
        raise InputError(
            f"--name: {record.name!r} is already registered by {others[0].declared_in}"
        )
    created = encrypt and not tracked.exists()
    if encrypt:
        atomic_write_bytes(tracked, seal(content, record, data_key))
    try:
        _dvc_add(tracked)
    except InputError:
        if created:  # leave nothing behind that no record describes
            tracked.unlink(missing_ok=True)
        raise
    dvc_file = _write_meta(tracked, record)
    sealed = f", encrypted under data key {data_key().key_id}" if encrypt else ""
    click.echo(
        f"registered {record.name} ({record.license}, {record.rows} rows{sealed}) in {dvc_file}"
    )
    if remove_plaintext:
        path.unlink()
        click.echo(f"removed the plaintext {path} (unlinked, not securely erased)")
    elif encrypt:
        click.echo(f"the plaintext {path} is untouched: delete it once you no longer need it")


def _check_plaintext_location(path: Path, remove_plaintext: bool) -> None:
    """Plaintext of a sealed dataset must not stay where git or DVC could pick it up."""
    root = Project.discover().root
    if path.resolve().is_relative_to(root) and not remove_plaintext:
        raise InputError(
            f"{path}: the plaintext lies inside the project {root}, where git or DVC could "
            "commit or push it; move it outside the project or pass --remove-plaintext"
        )


def _check_not_registered_in_plaintext(path: Path, entries: list[RegisteredDataset]) -> None:
    for entry in entries:
        if entry.data_path is not None and entry.data_path.resolve() == path.resolve():
            raise InputError(
                f"{path}: already registered in plaintext by {entry.declared_in}; `dvc remove` "
                "it first (its content stays in the DVC cache and remotes until `dvc gc`)"
            )


def _write_meta(tracked: Path, record: Provenance) -> Path:
    dvc_file = tracked.with_name(tracked.name + ".dvc")
    content = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    content["meta"] = {META_KEY: record.to_json()}
    atomic_write_text(dvc_file, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return dvc_file


def _roles(identifier, sensitive, label, time_, exclude) -> dict[str, ColumnRole]:
    roles: dict[str, ColumnRole] = {}
    assigned = [
        (identifier, ColumnRole.identifier, "--identifier"),
        (label, ColumnRole.label, "--label"),
        (time_, ColumnRole.time, "--time"),
    ]
    assigned += [(c, ColumnRole.sensitive, "--sensitive") for c in _columns_option(sensitive)]
    assigned += [(c, ColumnRole.excluded, "--exclude") for c in _columns_option(exclude)]
    for column, role, option in assigned:
        if column is None:
            continue
        if column in roles:
            raise InputError(f"{option}: column {column!r} already has role {roles[column]}")
        roles[column] = role
    return roles


def _dvc_add(path: Path) -> None:
    result = subprocess.run(
        # "--": a file name starting with "-" is a path, never an option.
        [sys.executable, "-m", "dvc", "add", "--quiet", "--", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise InputError(f"{path}: dvc add failed: {message[-1] if message else 'no output'}")


def _summary(entry: RegisteredDataset) -> dict:
    record = entry.record
    return {
        "name": record.name,
        "license": record.license,
        "sha256": record.sha256,
        "rows": record.rows,
        "columns": len(record.columns),
        "source": record.source,
        "encryption": _encryption(entry),
        "declared_in": str(entry.declared_in),
        "roles": {
            role.value: [c.name for c in record.columns if c.role is role]
            for role in ColumnRole
            if role is not ColumnRole.feature
        },
    }


def _encryption(entry: RegisteredDataset) -> dict | None:
    record = entry.record
    if not isinstance(record, Provenance) or record.encryption is None:
        return None
    return record.encryption.model_dump(mode="json")


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List registered datasets with license, hash and column roles."""
    entries = [_summary(e) for e in load_registry(load_section(DataParams, "data").registry)]
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
    entry = find_dataset(load_section(DataParams, "data").registry, name)
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
    root = Project.discover().root
    if path.resolve().is_relative_to(root):
        raise InputError(f"{path}: a data key never lives inside the project {root}")
    key = DataKey.generate()
    write_key_file(path, key)
    click.echo(f"wrote data key {key.key_id} to {path} (mode 0600); back it up and keep it secret")


@data.command("rekey")
@click.argument("name")
def rekey(name: str) -> None:
    """Re-encrypt sealed dataset NAME from the current data key to the new one.

    The current key comes from CUSTODIAN_DATA_KEY_FILE or CUSTODIAN_DATA_KEY,
    the new one from CUSTODIAN_NEW_DATA_KEY_FILE or CUSTODIAN_NEW_DATA_KEY.
    Safe to run again after an interruption.
    """
    entry = find_dataset(load_section(DataParams, "data").registry, name)
    record = entry.record
    if not isinstance(record, Provenance) or record.encryption is None or not entry.data_path:
        raise InputError(
            f"{entry.declared_in}: {name} is not encrypted (register it with --encrypt)"
        )
    old, new = data_key(), load_key(NEW_DATA_KEY, os.environ)
    if old.key_id == new.key_id:
        raise InputError(f"the new data key is the current one ({old.key_id})")
    stored = entry.read_bytes()
    where = str(entry.data_path)
    # Decrypt with whichever key the file is under: after an interruption between
    # writing the file and its record, the file is already under the new key.
    keys = {old.key_id: old, new.key_id: new}
    header = read_header(stored, where=where)
    if header.key_id not in keys:
        raise WrongKey(
            f"{where}: encrypted under data key {header.key_id}, "
            f"but the keys given are {old.key_id} (current) and {new.key_id} (new)"
        )
    plaintext = decrypt_bytes(stored, keys[header.key_id], context=record.name, where=where)
    if sha256_bytes(plaintext) != record.sha256:
        raise ProvenanceMismatch(
            f"{where}: decrypted content does not match the sha256 in its record"
        )
    rekeyed = record.model_copy(update={"encryption": Encryption(key_id=new.key_id)})
    atomic_write_bytes(entry.data_path, seal(plaintext, rekeyed, lambda: new))
    _dvc_add(entry.data_path)
    _write_meta(entry.data_path, rekeyed)
    click.echo(
        f"re-encrypted {name} from data key {old.key_id} to {new.key_id}; run `dvc repro` with "
        "the new key to re-encrypt its derived data, then commit and `dvc push`"
    )
