"""The dataset registry: every dataset the project knows, under ``datasets/``.

Two kinds of entry, one record type:

* ``datasets/<file>.dvc`` written by ``custodian data add``: the file is tracked
  by DVC and its validated ``Provenance`` sits in the ``.dvc`` file's
  ``meta.custodian`` (DVC keeps ``meta`` but does not hash it; the ingest stage
  depends on the whole ``datasets/`` directory, so an edited record still
  reruns everything downstream).
* ``datasets/<name>.yaml``: a ``SourceDeclaration`` for data shipped inside an
  installed package (the default RAND HIE file), pinned by SHA-256.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from governance.errors import InputError
from governance.provenance import Provenance, SourceDeclaration

META_KEY = "custodian"

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class RegisteredDataset:
    record: Provenance | SourceDeclaration
    declared_in: Path
    data_path: Path | None  # None for package resources

    @property
    def name(self) -> str:
        return self.record.name

    def read_bytes(self) -> bytes:
        if self.data_path is not None:
            if not self.data_path.is_file():
                raise InputError(
                    f"{self.declared_in}: data file {self.data_path} is missing "
                    "(run `dvc pull` or `dvc checkout`)"
                )
            return self.data_path.read_bytes()
        package, _, resource = self.record.source.removeprefix("package://").partition("/")
        try:
            return importlib.resources.files(package).joinpath(resource).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError) as err:
            raise InputError(
                f"{self.declared_in}: source: cannot read {self.record.source} ({err})"
            ) from None


def format_validation_error(err: ValidationError, *, where: str, prefix: str = "") -> str:
    """One line naming the file, the field and what is wrong with it."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {field or 'record'}: {message}{more}"


def parse_model(model: type[M], data: object, *, where: str, prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InputError(format_validation_error(err, where=where, prefix=prefix)) from None


def _load_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid YAML ({err.__class__.__name__})") from None


def load_dvc_entry(dvc_file: Path) -> RegisteredDataset | None:
    """The dataset tracked by ``dvc_file``, or None if it carries no Custodian record."""
    content = _load_yaml(dvc_file)
    if not isinstance(content, dict):
        raise InputError(f"{dvc_file}: not a .dvc file")
    meta = content.get("meta")
    if not isinstance(meta, dict) or META_KEY not in meta:
        return None
    record = parse_model(Provenance, meta[META_KEY], where=str(dvc_file), prefix="meta.custodian")
    outs = content.get("outs")
    if not isinstance(outs, list) or len(outs) != 1 or "path" not in outs[0]:
        raise InputError(f"{dvc_file}: outs: expected exactly one tracked file")
    return RegisteredDataset(record, dvc_file, dvc_file.parent / outs[0]["path"])


def load_registry(directory: Path) -> list[RegisteredDataset]:
    if not directory.is_dir():
        raise InputError(f"{directory}: dataset registry directory not found")
    entries: list[RegisteredDataset] = []
    for path in sorted(directory.iterdir()):
        if path.suffix == ".yaml":
            record = parse_model(SourceDeclaration, _load_yaml(path), where=str(path))
            entries.append(RegisteredDataset(record, path, None))
        elif path.suffix == ".dvc":
            entry = load_dvc_entry(path)
            if entry is not None:
                entries.append(entry)
    names = [e.name for e in entries]
    for name in set(names):
        if names.count(name) > 1:
            where = ", ".join(str(e.declared_in) for e in entries if e.name == name)
            raise InputError(f"dataset name {name!r} is registered twice: {where}")
    return entries


def find_dataset(directory: Path, name: str) -> RegisteredDataset:
    entries = load_registry(directory)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise InputError(f"dataset {name!r} is not registered in {directory}/ (known: {known})")
