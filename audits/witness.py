"""Witnessed checkpoints: the audit log's signed heads, committed outside the log by sign-offs.

A log, its checkpoint files and the privacy ledger all live in the checkout;
whoever can write there can delete them, or roll them back, and the next
command would sign whatever is left (see :mod:`audits.log`). Certificate
Transparency's answer is a witness: someone else keeps a copy of a signed
head and later asks for a consistency proof. Here every sign-off carries the
log's current signed head (``predicate.log_checkpoint``) inside the
reviewer's signature, and the sign-off is committed: so the project's git
history holds heads the checkout's owner cannot take back.

:func:`witness_problems` is the release gate's part: for every head a valid
sign-off witnessed, the log must extend it (RFC 9162 consistency proof,
:meth:`audits.log.AuditLog.verify` with ``against``). A deleted, truncated or
rewritten log fails. The privacy ledger's spends are logged as events
(:mod:`audits.log.spends`) and cross-checked against the ledger, so deleting
the ledger is caught once deleting the log is.

:meth:`audits.log.AuditLog.open_tree` is the writers' part: no new tree over
history, nor over an empty log while a committed head names a non-empty one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from audits.keys import PublicKey
from audits.log import AuditLog, SignedCheckpoint
from audits.signoff import SignoffCandidate, authenticate_signoff
from audits.trust import KeySet


@dataclass(frozen=True)
class Witness:
    """A signed head of the log that a valid sign-off carries."""

    file: str
    checkpoint: SignedCheckpoint


def witnesses(files: Mapping[str, bytes], store: KeySet) -> list[Witness]:
    """The heads carried by every sign-off in ``files`` whose signature verifies.

    Authenticated before they are believed: a file anyone could write names
    nothing. Sign-offs that fail for other reasons are the release gate's business.
    """
    found = []
    for name in sorted(files):
        outcome = authenticate_signoff(name, files[name], store)
        if isinstance(outcome, SignoffCandidate):
            found.append(Witness(file=name, checkpoint=outcome.statement.predicate.log_checkpoint))
    return found


def witness_problems(
    log: AuditLog, keys: Sequence[PublicKey], witnessed: Iterable[Witness]
) -> list[str]:
    """One line per distinct witnessed head the log does not extend (none: all are extended).

    Problems the log has anyway (a plain :meth:`~audits.log.AuditLog.verify`
    reports them) are left out: they are the log's, not the witness's.
    """
    distinct: dict[tuple[int, str], Witness] = {}
    for witness in witnessed:
        head = witness.checkpoint.tree_head
        distinct.setdefault((head.tree_size, head.root_hash), witness)
    if not distinct:
        return []
    known = {problem.message for problem in log.verify(keys).problems}
    lines = []
    for (size, root), witness in sorted(distinct.items()):
        report = log.verify(keys, against=witness.checkpoint)
        new = [problem for problem in report.problems if problem.message not in known]
        if new:
            lines.append(
                f"{witness.file} witnessed the log at {size} entries (root {root[:16]}...): "
                f"{new[0].message}"
            )
    return lines
