"""The audit events the log tests append: one builder, numbered so entries differ."""

from __future__ import annotations

from audits.log import AuditEvent, EventKind

SHA = "ab" * 32


def command_event(
    number: int, *, stage: str = "train", actor: str = "alice", **details: object
) -> AuditEvent:
    """A successful ``custodian <stage>`` run by ``actor``, ``number`` in its details."""
    return AuditEvent(
        actor=actor,
        command=f"custodian {stage}",
        kind=EventKind.COMMAND_SUCCEEDED,
        stage=stage,
        inputs={"data/train.csv": SHA},
        details={"number": number, **details},
    )
