"""Copy a local record stream into a server store, line for line, checking every hash.

The server's copy is the same bytes: each line keeps its own ``seq`` and ``prev``,
so the chain head (and anything anchored to it) is unchanged. Every line must
carry the position it lands at (checked with the owner's link reader) and the
server's trigger checks each ``prev`` again. A target that already holds a prefix
of the source (an earlier, interrupted import) is continued; one that holds
anything else is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from stores.errors import StoreError
from stores.local import GENESIS, LinkReader, sha256_hex
from stores.stream import RecordStream


class TransferRefused(StoreError):
    """The source cannot be copied as it is, or the target holds other records."""


@dataclass(frozen=True)
class Transferred:
    """How many lines the target held already, how many were copied, and the chain head."""

    already: int
    copied: int
    head: str


def copy_stream(source: RecordStream, target: RecordStream, link: LinkReader) -> Transferred:
    """Copy ``source``'s lines that ``target`` lacks, in one target session."""
    with source.session() as reading:
        snapshot = reading.snapshot()
    if snapshot.torn is not None:
        raise TransferRefused(
            f"{source.label}: a torn last line ({snapshot.torn.reason}); let the next "
            "local write set it aside, then import"
        )
    lines = snapshot.raw.split(b"\n")[:-1]
    prev = GENESIS
    for seq, line in enumerate(lines):
        found = link(line)
        if found is None or found.seq != seq or found.prev != prev:
            raise TransferRefused(
                f"{source.label}: line {seq + 1} does not continue the chain; nothing imported"
            )
        prev = sha256_hex(line)
    with target.session() as writing:
        existing = writing.snapshot().raw.split(b"\n")[:-1]
        if existing != lines[: len(existing)]:
            raise TransferRefused(
                f"{target.label} already holds {len(existing)} other records; nothing imported"
            )
        rest = lines[len(existing) :]
        writing.append([_verbatim(line) for line in rest])
    return Transferred(already=len(existing), copied=len(rest), head=prev)


def _verbatim(line: bytes):
    def build(seq: int, prev: str) -> bytes:
        return line  # its seq and prev were checked against this position above

    return build
