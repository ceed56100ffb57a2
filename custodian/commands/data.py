"""``custodian data add|list|show|schema``: the dataset registry."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml
from pydantic import ValidationError

from audits.files import atomic_write_text
from custodian.params import DataParams, load_section
from governance.errors import InputError
from governance.provenance import ColumnRole, Provenance, provenance_json_schema
from governance.registry import (
    META_KEY,
    RegisteredDataset,
    find_dataset,
    format_validation_error,
    load_registry,
)
from governance.tables import infer_columns, read_csv, sha256_file


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
) -> None:
    """Track PATH with DVC and record its provenance in the .dvc file's meta."""
    registry = load_section(DataParams, "data").registry
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.resolve().parent != registry.resolve():
        raise InputError(
            f"{path}: registered datasets live directly in {registry}/; move the file there"
        )
    roles = _roles(identifier, sensitive, label, time_, exclude)
    frame = read_csv(path)
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
            sha256=sha256_file(path),
            rows=len(frame),
            columns=columns,
            intended_use=intended_use,
            restrictions=list(restriction),
        )
    except ValidationError as err:
        raise InputError(format_validation_error(err, where="custodian data add")) from None
    others = [e for e in load_registry(registry) if e.name == record.name]
    if others and others[0].data_path != path:
        raise InputError(
            f"--name: {record.name!r} is already registered by {others[0].declared_in}"
        )
    _dvc_add(path)
    dvc_file = path.with_name(path.name + ".dvc")
    content = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    content["meta"] = {META_KEY: record.to_json()}
    atomic_write_text(dvc_file, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    click.echo(f"registered {record.name} ({record.license}, {record.rows} rows) in {dvc_file}")


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
        "declared_in": str(entry.declared_in),
        "roles": {
            role.value: [c.name for c in record.columns if c.role is role]
            for role in ColumnRole
            if role is not ColumnRole.feature
        },
    }


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
        click.echo(
            f"{item['name']:<16} {item['license']:<28} {item['rows']:>8}  "
            f"{item['sha256'][:12]:<14} {roles}"
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
