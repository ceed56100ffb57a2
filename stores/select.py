"""Pick a record stream's backend from the checkout's local store configuration.

A record file that would live at ``<dir>/<name>.jsonl`` is the local file itself
unless ``<dir>/store.toml`` (:mod:`stores.config`) names a PostgreSQL store; then
it is the stream ``<name>`` of the configured project there. Owners call
:func:`open_stream` with the path they always used, so a checkout without the
configuration behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stores import config
from stores.local import LinkReader
from stores.postgres import PostgresStream
from stores.stream import LocalStream, RecordStream

# Backend name -> how to open the stream for a record file's path.
BACKENDS: dict[str, Callable[..., RecordStream]] = {
    LocalStream.backend: LocalStream,
    PostgresStream.backend: PostgresStream,
}


def open_stream(
    path: Path,
    link: LinkReader | None,
    *,
    lock_timeout: float = -1,
    root: Path | None = None,
) -> RecordStream:
    """The stream for the record file ``path``: local unless a PostgreSQL store is configured.

    The configuration is looked up in ``root`` (default: the file's directory), the
    directory whose record files the store holds; ``path`` must lie inside it.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    chosen = config.load(root)
    if chosen is None:
        return BACKENDS[LocalStream.backend](path, link, lock_timeout=lock_timeout)
    return BACKENDS[PostgresStream.backend](chosen, stream_name(path, root))


def stream_name(path: Path, root: Path | None = None) -> str:
    """The stream a record file becomes in a server store: its path below ``root`` (default:
    its directory) without the ``.jsonl`` suffix, ``/`` and ``.`` spelt ``-``.

    So ``privacy-ledger.jsonl`` is ``privacy-ledger`` and ``audit/log.jsonl`` is ``audit-log``.
    """
    path = Path(path)
    relative = path.name if root is None else path.relative_to(root).as_posix()
    return relative.removesuffix(".jsonl").replace("/", "-").replace(".", "-")
