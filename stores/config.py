"""Which store a checkout uses: ``.custodian/store.toml``, local and never committed.

Without the file a checkout keeps its records in local files (the default). With
it, every record stream whose file would live in ``.custodian/`` lives in the
PostgreSQL database named by ``url`` instead, under ``project``. The file holds
no secret: a URL with a password is refused, and libpq finds the password where
it always does (``PGPASSFILE``/``~/.pgpass``, ``PGPASSWORD``, a service file).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import psycopg.conninfo

from stores.errors import StoreError
from stores.files import create_private_file, fsync_directory

CONFIG_NAME = "store.toml"
_PROJECT = re.compile(r"[a-z0-9_]{1,40}")
_SCHEMES = ("postgresql://", "postgres://")


class StoreConfigError(StoreError):
    """The store configuration or a store URL is unusable (a usage error)."""


@dataclass(frozen=True)
class StoreConfig:
    """A PostgreSQL store: where (``url``, no password) and whose records (``project``)."""

    url: str
    project: str

    def __post_init__(self) -> None:
        check_url(self.url)
        if not isinstance(self.project, str) or not _PROJECT.fullmatch(self.project):
            raise StoreConfigError(
                f"store project must be 1-40 of a-z, 0-9 and _, got {self.project!r}"
            )


def check_url(url: str) -> None:
    """Refuse anything but a password-free ``postgresql://`` URL."""
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise StoreConfigError(f"store URL must start with postgresql://, got {url!r}")
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise StoreConfigError(f"store URL is not a libpq URL: {err}") from None
    if "password" in params:
        raise StoreConfigError(
            "store URL embeds a password; remove it and give it to libpq instead "
            "(~/.pgpass or PGPASSFILE, PGPASSWORD, or a service file)"
        )


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*):[^@/\s]*@")
_PARAM_PASSWORD = re.compile(r"(password\s*=\s*)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any password in a PostgreSQL URL or conninfo replaced by ``***``.

    For what gets logged: a refused URL still appears in the command line that the
    audit log records.
    """
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def config_path(directory: Path) -> Path:
    """The configuration file for the record streams in ``directory`` (``.custodian/``)."""
    return Path(directory) / CONFIG_NAME


def load(directory: Path) -> StoreConfig | None:
    """The PostgreSQL store configured for ``directory``, or None for local files."""
    path = config_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise StoreConfigError(f"{path}: not TOML: {err}") from None
    unknown = sorted(set(data) - {"url", "project"})
    if unknown:
        raise StoreConfigError(f"{path}: unknown key {unknown[0]!r} (expected url, project)")
    for key in ("url", "project"):
        if not isinstance(data.get(key), str):
            raise StoreConfigError(f"{path}: field {key!r} must be a string")
    try:
        return StoreConfig(data["url"], data["project"])
    except StoreConfigError as err:
        raise StoreConfigError(f"{path}: {err}") from None


def save(directory: Path, config: StoreConfig | None) -> Path:
    """Write (or with None, remove) the configuration atomically; mode 0600."""
    path = config_path(directory)
    if config is None:
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"url = {_toml_string(config.url)}\nproject = {_toml_string(config.project)}\n"
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    create_private_file(temp, text.encode("utf-8"))
    os.replace(temp, path)
    fsync_directory(path.parent)
    return path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
