"""The log as a plain-text timeline for reviewers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from audits.log.records import AuditEntry


def format_timeline(entries: Iterable[AuditEntry]) -> str:
    """A plain-text table of entries for reviewers: one row per event, oldest first."""
    header = ("#", "time (UTC)", "kind", "stage", "command", "actor", "note")
    rows = [header, *(_timeline_row(entry) for entry in entries)]
    # The last column (the note) is free width, so it is not padded.
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [row[column].ljust(width) for column, width in enumerate(widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _timeline_row(entry: AuditEntry) -> tuple[str, ...]:
    event = entry.event
    if event.error:
        note = "error: " + " ".join(event.error.split())  # one row per event, always
    else:
        parts = (
            [f"{len(event.inputs)} in", f"{len(event.outputs)} out"]
            if (event.inputs or event.outputs)
            else []
        )
        parts += [f"{key}={_short(value)}" for key, value in sorted(event.details.items())]
        note = ", ".join(parts)
    return (
        str(entry.seq),
        entry.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        event.kind.value,
        event.stage or "-",
        event.command,
        event.actor,
        note,
    )


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
