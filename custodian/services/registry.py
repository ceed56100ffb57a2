"""Registering datasets (``custodian data ...``): provenance in the .dvc file's meta.

``data add --encrypt`` stores a sensitive dataset sealed (``governance.storage``),
so that the DVC cache and every remote hold only ciphertext; ``data keygen``
writes a data key file and ``data rekey`` moves a sealed dataset to a new key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from audits.files import atomic_write_bytes, atomic_write_text
from custodian.params import DataParams, PolicyParams, load_section
from custodian.project import Project
from custodian.services.datasets import data_key, license_policy
from governance.errors import InputError, PolicyViolation
from governance.ingest import ProvenanceMismatch
from governance.populations import identifier_digests, overlaps
from governance.provenance import ColumnRole, Encryption, Provenance
from governance.registry import (
    META_KEY,
    RegisteredDataset,
    find_dataset,
    format_validation_error,
    load_registry,
)
from governance.storage import SEALED_SUFFIX, seal, unseal
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


@dataclass(frozen=True)
class Registered:
    """A dataset just registered: its record and the .dvc file that carries it."""

    record: Provenance
    dvc_file: Path
    notes: tuple[str, ...] = ()


def register(
    path: Path,
    *,
    license_: str,
    source: str,
    citation: str | None,
    name: str | None,
    identifier: str | None,
    population: str | None,
    sensitive: str | None,
    label: str | None,
    time_: str | None,
    exclude: str | None,
    text: str | None,
    pii: str | None,
    intended_use: str | None,
    restriction: tuple[str, ...],
    encrypt: bool,
    remove_plaintext: bool,
) -> Registered:
    """Track ``path`` with DVC (sealed first with ``encrypt``) and record its provenance in
    the .dvc file's meta; with ``remove_plaintext``, unlink ``path`` afterwards.

    The license must pass the policy in params.yaml (as at ingest). No value of a
    free-text, identifier or personal-data column is recorded, only counts and formats."""
    registry = load_section(DataParams, "data").registry
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if encrypt:
        _check_plaintext_location(path, remove_plaintext)
    elif path.resolve().parent != registry.resolve():
        raise InputError(
            f"{path}: registered datasets live directly in {registry}/; move the file there"
        )
    roles = _roles(identifier, sensitive, label, time_, exclude)
    entries = load_registry(registry)
    content = path.read_bytes()
    frame = read_csv_bytes(content, where=str(path))
    try:
        inferred = infer_columns(frame, roles, text=_columns_option(text), pii=_columns_option(pii))
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    columns = inferred.columns
    record_name = name or path.stem.lower()
    if population is None:  # a new version inherits its predecessor's population
        population = next((e.record.population for e in entries if e.name == record_name), None)
    if identifier is not None:
        _check_population(frame[identifier], population, entries, where=path)
    try:
        record = Provenance(
            name=record_name,
            population=population,
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
    # Refused here rather than at ingest, before anything is tracked or staged.
    policy = license_policy(load_section(PolicyParams, "policy"))
    try:
        policy.obligations(record.license, record.name)
    except PolicyViolation as err:
        raise PolicyViolation(f"--license: {err}") from None
    tracked = registry / f"{record.name}.csv{SEALED_SUFFIX}" if encrypt else path
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
    if remove_plaintext:
        path.unlink()
    return Registered(record=record, dvc_file=dvc_file, notes=tuple(inferred.notes))


def _check_population(
    ids: pd.Series, population: str | None, entries: list[RegisteredDataset], *, where: Path
) -> None:
    """Refuse a dataset whose people are already registered under a population while it
    names none: it would give them a fresh privacy budget. A named population is the
    registrant's declaration (ids of unrelated datasets can coincide); an overlap with
    another population is then only reported. Compares hashed identifier sets."""
    registered = [
        (entry.record.population, entry.name, _registered_digests(entry))
        for entry in entries
        if entry.record.population is not None
        and entry.record.population != population
        and _identifier(entry) is not None
    ]
    found = overlaps(identifier_digests(ids), registered)
    if not found:
        return
    first = found[0]
    shared = (
        f"{first.shared} identifier value(s) also appear in dataset {first.dataset!r} of "
        f"population {first.population!r}"
    )
    if population is None:
        raise InputError(
            f"{where}: --population: {shared}; name the population (--population "
            f"{first.population}) so they share one lifetime privacy budget"
        )
    print(
        f"warning: {where}: {shared}; registered under population {population!r} as named "
        "(if they are the same people, their budgets are not shared)",
        file=sys.stderr,
    )


def _registered_digests(entry: RegisteredDataset) -> frozenset[bytes]:
    record = entry.record
    content = entry.read_bytes()
    where = str(entry.data_path or record.source)
    if isinstance(record, Provenance):
        content = unseal(content, record, data_key, where=where)
    frame = read_csv_bytes(content, where=where)
    return identifier_digests(frame[_identifier(entry)])


def _identifier(entry: RegisteredDataset) -> str | None:
    return next((c.name for c in entry.record.columns if c.role is ColumnRole.identifier), None)


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
    # With core.autostage, `dvc add` staged the .dvc file before its meta held the
    # record; stage it again so that what is committed carries the provenance.
    if _autostage():
        ignore = tracked.with_name(".gitignore")
        staged = [str(dvc_file), *([str(ignore)] if ignore.exists() else [])]
        subprocess.run(["git", "add", "--", *staged], capture_output=True, check=False)
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


def _autostage() -> bool:
    """Whether DVC stages the files it writes (``core.autostage``), as ``dvc add`` would."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "core.autostage"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip().lower() == "true"


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


def summaries() -> list[dict]:
    """Every registered dataset with license, hash, size and column roles."""
    return [_summary(e) for e in load_registry(load_section(DataParams, "data").registry)]


def registered(name: str) -> RegisteredDataset:
    return find_dataset(load_section(DataParams, "data").registry, name)


def keygen(path: Path) -> DataKey:
    """Write a new random data key to ``path`` (mode 0600), never inside the project."""
    root = Project.discover().root
    if path.resolve().is_relative_to(root):
        raise InputError(f"{path}: a data key never lives inside the project {root}")
    key = DataKey.generate()
    write_key_file(path, key)
    return key


def rekey(name: str) -> tuple[DataKey, DataKey]:
    """Re-encrypt sealed dataset ``name`` from the current data key to the new one; both keys.

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
    return old, new
