"""The project's two trust stores, and which of them holds a key by name."""

from __future__ import annotations

from audits.trust import TrustStore
from custodian.project import Project


def stores(project: Project) -> dict[str, TrustStore]:
    """The committed store of people's keys and this checkout's store of pipeline keys."""
    return {"project": project.trust_store(), "local": project.local_trust_store()}


def holding(project: Project, name: str) -> TrustStore | None:
    """The store that has a key called ``name``, if either does."""
    return next(
        (
            store
            for store in stores(project).values()
            if any(entry.name == name for entry in store.entries())
        ),
        None,
    )
