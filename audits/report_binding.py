"""Binding the compliance report to the run that wrote it, through the audit log.

``reports/compliance.json`` is written after the manifest and signed by
nobody, so on its own it proves nothing: anyone with write access to the
project can set ``"passed": true`` or put back an older, passing report.
The report stage therefore logs, right after writing the pack, a ``decision``
event ``{"report_binding": {...}}`` with the SHA-256 of each file it wrote,
of the manifest it was built for, and its verdict; the stage's outcome event
(``command_succeeded`` only when every gate cleared) carries the same
invocation id.

:func:`binding_problem` is what ``custodian signoff`` and ``release check``
ask: does the *latest* report run in the log name the current manifest, match
the files on disk byte for byte, and end in success? The latest run, not any
run: putting back the pack of an older passing run over the same manifest
must not undo a later failing one. The answer is only as good as the log,
whose own integrity is the checkpoints' business (:mod:`audits.witness`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from audits.log.records import AuditEntry, EventKind, Sha256Hex

BINDING_KEY = "report_binding"


class ReportBinding(BaseModel):
    """What one report run wrote, for which manifest, and whether its gates cleared."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    manifest: dict[str, Sha256Hex]
    files: dict[str, Sha256Hex]
    passed: bool

    def details(self) -> dict[str, JsonValue]:
        """The ``decision`` event's details."""
        return {BINDING_KEY: self.model_dump(mode="json")}


def latest_binding(entries: Iterable[AuditEntry]) -> tuple[ReportBinding, bool] | None:
    """The newest report binding in the log and whether its invocation succeeded."""
    latest: tuple[ReportBinding, str | None] | None = None
    succeeded: set[str] = set()
    for entry in entries:
        event = entry.event
        invocation = event.details.get("invocation")
        if event.kind is EventKind.COMMAND_SUCCEEDED and isinstance(invocation, str):
            succeeded.add(invocation)
        elif event.kind is EventKind.DECISION and BINDING_KEY in event.details:
            try:
                binding = ReportBinding.model_validate(event.details[BINDING_KEY])
            except ValidationError:
                continue  # not one this code wrote; it binds nothing
            latest = (binding, invocation if isinstance(invocation, str) else None)
    if latest is None:
        return None
    binding, invocation = latest
    return binding, invocation is not None and invocation in succeeded


def binding_problem(
    entries: Iterable[AuditEntry],
    manifest: Mapping[str, str | None],
    files: Mapping[str, str | None],
) -> str | None:
    """Why the report on disk is not bound to the current manifest by a succeeded run, or None.

    ``manifest`` and ``files`` map each path to its SHA-256 now (None: missing).
    """
    found = latest_binding(entries)
    if found is None:
        return "no report run is recorded in the audit log; run the report stage (dvc repro)"
    binding, succeeded = found
    if not succeeded:
        verdict = "failed its gates" if not binding.passed else "did not succeed"
        return f"the latest report run {verdict}; nothing it wrote may be signed or released"
    for path, digest in sorted(manifest.items()):
        if binding.manifest.get(path) != digest:
            return (
                f"the latest report run was built for another {path} than the current one; "
                f"rerun the report stage"
            )
    for path, digest in sorted(files.items()):
        logged = binding.files.get(path)
        if logged is None:
            return f"{path} was not written by the latest report run"
        if digest != logged:
            now = "missing" if digest is None else f"now {digest[:12]}"
            return (
                f"{path} is not the file the latest report run wrote "
                f"(logged {logged[:12]}, {now}); it was changed after the report stage"
            )
    return None
