"""Quoting names and values into DuckDB SQL (table functions take no bound parameters)."""

from __future__ import annotations

from pathlib import Path


def ident(name: str) -> str:
    """A column or table name as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str | Path) -> str:
    """A string (or path) as a quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
