"""The audit trail around every state-changing command: who ran what, on what, with what outcome.

:func:`custodian.cli.main.main` runs each invocation inside :func:`recording`, which
appends to the project's audit log (:mod:`custodian.project` says where):

1. ``command_started``: actor (``$CUSTODIAN_ACTOR`` or the OS user), the command
   line, the pipeline stage, the SHA-256 of ``params.yaml`` and the git commit;
   then a checkpoint signed by the pipeline key. If the log cannot be extended
   (tampered, untrusted checkpoint, revoked key) the command does not run.
2. ``decision`` / ``waiver`` events, appended by the command as they happen
   through :func:`current` (``current().decision({...})``, ``current().waiver(...)``,
   :func:`record_privacy_spend`).
3. ``command_succeeded`` with the input and output hashes the command recorded
   (``current().record_inputs({...})`` / ``record_outputs({...})``; none by
   default), or ``refused`` (a check, policy or budget said no: exit 1) or
   ``command_failed`` (bad input, or anything else) with the one-line error;
   then another signed checkpoint, so every entry is covered by a signature
   when the command ends.

Every event of one invocation carries the same ``details.invocation`` id, so
interleaved commands stay apart in the log. Logging never hides the command's
own error: if recording the outcome fails after the command failed, the
command's error is what the user gets, with a warning. If it fails after the
command succeeded, the command fails closed (exit 1).

Read-only commands are not logged (reading the evidence must not change it):
``audit path|show|verify``, ``data list|show|schema``, ``keys list``,
``verify artifacts``, ``release check``, and anything asking for ``--help``.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import JsonValue

from audits.canonical import NotCanonicalizable, canonical_sha256, sha256_hex
from audits.errors import AuditError
from audits.keys import SigningKey, load_or_create_signing_key
from audits.log import AuditEntry, AuditEvent, AuditLog, EventKind, SignedCheckpoint
from audits.log.spends import PrivacySpend
from audits.manifest import sha256_file
from audits.trust import KeyRole, TrustStore
from audits.witness import witnesses
from custodian.project import PIPELINE_KEY_NAME, Project, private_key_path, stage_entry_paths
from governance.errors import InputError
from stores.config import redact as redact_store_secrets
from stores.errors import StoreError

READ_ONLY: frozenset[tuple[str, ...]] = frozenset(
    {
        ("audit", "path"),
        ("audit", "show"),
        ("audit", "verify"),
        ("data", "list"),
        ("data", "show"),
        ("data", "schema"),
        ("keys", "list"),
        ("trust", "status"),
        ("store", "status"),
        ("verify", "artifacts"),
        ("release", "check"),
    }
)
# The one command that may start a new signed tree over an existing log (a person's decision).
ADOPT = ("audit", "adopt")
_HELP = frozenset({"--help", "-h"})
_SHA256 = re.compile(r"[0-9a-f]{64}")

_CURRENT: ContextVar[Trail | None] = ContextVar("custodian_trail", default=None)


class RevokedSigningKey(AuditError):
    """The pipeline's signing key is revoked in the trust store; it signs nothing more."""


class NoActiveTrail(RuntimeError):
    """A command asked for the trail outside :func:`recording` (a bug, not a user error)."""


@dataclass
class Trail:
    """One command's place in the audit log: what it reads, writes and decides."""

    log: AuditLog
    store: TrustStore
    key: SigningKey
    actor: str
    command: str
    stage: str | None
    invocation: str = field(default_factory=lambda: secrets.token_hex(4))
    exit_code: int = 0
    _inputs: dict[str, str] = field(default_factory=dict)
    _outputs: dict[str, str] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def record_inputs(self, hashes: Mapping[str, str]) -> None:
        """Add ``path -> SHA-256`` of files the command read to its outcome event."""
        self._inputs.update(_checked_hashes(hashes))

    def record_outputs(self, hashes: Mapping[str, str]) -> None:
        """Add ``path -> SHA-256`` of files the command wrote to its outcome event."""
        self._outputs.update(_checked_hashes(hashes))

    def decision(self, details: Mapping[str, JsonValue]) -> AuditEntry:
        """Append a ``decision`` event now (e.g. a gate's verdict, a spend of privacy budget)."""
        return self._append(EventKind.DECISION, details)

    def waiver(
        self, subject: str, reason: str, details: Mapping[str, JsonValue] | None = None
    ) -> AuditEntry:
        """Append a ``waiver`` event now: ``subject`` was let through, for ``reason``."""
        return self._append(
            EventKind.WAIVER, {"waiver": subject, "reason": reason, **(details or {})}
        )

    def sign(self) -> SignedCheckpoint:
        """Write a checkpoint over every entry so far, signed by the pipeline key."""
        entry = self.store.by_fingerprint(self.key.fingerprint)
        if entry is None or entry.revoked:
            raise RevokedSigningKey(_revoked_message(self.key))
        return self.log.write_checkpoint(self.key, self.store.trusted_keys())

    def _append(
        self,
        kind: EventKind,
        details: Mapping[str, JsonValue],
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        params_sha256: str | None = None,
        git_commit: str | None = None,
        error: str | None = None,
    ) -> AuditEntry:
        event = AuditEvent(
            actor=self.actor,
            command=self.command,
            kind=kind,
            stage=self.stage,
            inputs=dict(inputs or {}),
            outputs=dict(outputs or {}),
            params_sha256=params_sha256,
            git_commit=git_commit,
            details={**details, "invocation": self.invocation},
            error=error,
        )
        return self.log.append(event)

    def _finish(self, kind: EventKind, error: str | None, details: dict[str, JsonValue]) -> None:
        self._append(
            kind,
            {"duration_s": round(time.monotonic() - self._started, 3), **details},
            inputs=self._inputs,
            outputs=self._outputs,
            error=error,
        )
        try:
            self.sign()
        except RevokedSigningKey as exc:
            # Only `keys revoke pipeline` gets here: the revocation itself succeeded.
            _warn(f"the outcome is logged but not signed: {exc}")


def current() -> Trail:
    """The trail of the command now running; :class:`NoActiveTrail` outside :func:`recording`."""
    trail = _CURRENT.get()
    if trail is None:
        raise NoActiveTrail("no audit trail is active: run commands through custodian.cli.main")
    return trail


def record_privacy_spend(
    dataset_sha256: str,
    run_id: str,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    delta: float,
) -> AuditEntry:
    """Log that the privacy ledger reserved ``steps`` (cumulative) for ``run_id`` on a dataset.

    Call it right after each successful ``LedgerRun.record_steps``: it appends a
    ``decision`` event with ``details = {"privacy_spend": {...}}``.

    The audit log is the authoritative copy of what was spent: it is
    hash-chained and covered by signed checkpoints. The privacy ledger is the
    fast index the budget check reads. ``custodian audit verify`` checks that
    both agree run by run, so a ledger file that was deleted, truncated or
    rolled back to hide spent budget is reported, naming the dataset. A crash
    between the ledger's reservation and this call leaves the ledger one
    reservation ahead of the log: reported too, for a human to confirm.
    """
    spend = PrivacySpend(
        dataset_sha256=dataset_sha256,
        run_id=run_id,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        delta=delta,
    )
    return current().decision({"privacy_spend": spend.model_dump(mode="json")})


# --------------------------------------------------------------------------- the CLI wrapper


@contextmanager
def recording(
    argv: Sequence[str],
    path: tuple[str, ...] | None,
    is_refusal: Callable[[BaseException], bool],
) -> Iterator[Trail | None]:
    """Log the command ``argv`` (sub-commands ``path``) around its run; yield None for
    read-only ones and for ``path`` None (no command: usage or help).

    ``is_refusal`` tells a refusal (a check, policy or budget said no) from a failure.
    The caller sets ``trail.exit_code`` when the command returns a code instead of raising.
    """
    # A data-parallel follower (RANK > 0) repeats its leader's command; the leader logs it.
    follower = os.environ.get("RANK", "0") != "0"
    if path is None or path in READ_ONLY or _HELP.intersection(argv) or follower:
        yield None
        return
    project = Project.discover()
    # A database password typed into a store URL (refused) must not reach the log.
    command = shlex.join(["custodian", *map(redact_store_secrets, argv)])
    adopt = path == ADOPT
    with session(project, command, _stage(project, path), is_refusal, adopt=adopt) as trail:
        yield trail


@contextmanager
def session(
    project: Project,
    command: str,
    stage: str | None,
    is_refusal: Callable[[BaseException], bool] = lambda error: False,
    *,
    adopt: bool = False,
) -> Iterator[Trail]:
    """Log one command in ``project``: started and signed, then its outcome and signed again."""
    trail = _start(project, command, stage, adopt)
    token = _CURRENT.set(trail)
    try:
        yield trail
    except BaseException as error:
        _record_error(trail, error, is_refusal)
        raise
    else:
        if stage is not None and os.environ.get("DVC_STAGE") == stage:
            inputs, outputs = stage_file_hashes(project, stage)
            trail.record_inputs(inputs)
            trail.record_outputs(outputs)
        trail._finish(_kind_for_code(trail.exit_code), None, {"exit_code": trail.exit_code})
    finally:
        _CURRENT.reset(token)


def stage_file_hashes(project: Project, stage: str) -> tuple[dict[str, str], dict[str, str]]:
    """SHA-256 of the deps and of the outs dvc.yaml declares for ``stage``, as DVC ran it.

    A directory is summarised by one digest over its files' relative paths and
    hashes (interpreter caches left out), so an event stays small.
    """
    spec = project.dvc_stages().get(stage) or {}

    def named(keys: tuple[str, ...]) -> dict[str, str]:
        paths = stage_entry_paths(spec, keys, f"stages.{stage}")
        return {
            path: path_digest(project.root / path)
            for path in paths
            if (project.root / path).exists()
        }

    return named(("deps",)), named(("outs", "metrics", "plots"))


def path_digest(path: Path) -> str:
    """SHA-256 of a file, or of a directory's sorted (relative path, file SHA-256) pairs."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(
        [p.relative_to(path).as_posix(), sha256_file(p)]
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    return canonical_sha256(files)


def pipeline_key(store: TrustStore) -> SigningKey:
    """The pipeline's signing key, created on first use and registered in ``store``."""
    key = load_or_create_signing_key(private_key_path(PIPELINE_KEY_NAME))
    entry = store.ensure(PIPELINE_KEY_NAME, KeyRole.PIPELINE, key.public_key)
    if entry.revoked:
        raise RevokedSigningKey(_revoked_message(key))
    return key


# --------------------------------------------------------------------------- internals


def _start(project: Project, command: str, stage: str | None, adopt: bool = False) -> Trail:
    store = project.local_trust_store()
    trail = Trail(
        log=project.audit_log(),
        store=store,
        key=pipeline_key(store),
        actor=_actor(),
        command=command,
        stage=stage,
    )
    if adopt:
        adopted = trail.log.adopt(trail.key)
    else:
        # No new tree over history, nor over a log that committed sign-offs witnessed.
        trail.log.open_tree(trail.key, lambda: _witnessed(project))
    params_sha256, params_hashed = _params_sha256(project)
    details: dict[str, JsonValue] = {"params_hashed": params_hashed} if params_hashed else {}
    if adopt:
        head = adopted.tree_head
        details["adopted"] = {"tree_size": head.tree_size, "root_hash": head.root_hash}
    trail._append(
        EventKind.COMMAND_STARTED,
        details,
        params_sha256=params_sha256,
        git_commit=project.git_commit(),
    )
    # Signed before the command runs: a log that cannot be extended stops it here.
    trail.sign()
    return trail


def _witnessed(project: Project) -> list[SignedCheckpoint]:
    return [w.checkpoint for w in witnesses(project.signoff_files(), project.people_keys()[0])]


def _record_error(
    trail: Trail, error: BaseException, is_refusal: Callable[[BaseException], bool]
) -> None:
    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
        kind, message, details = _kind_for_code(code), None, {"exit_code": code}
    else:
        kind = EventKind.REFUSED if is_refusal(error) else EventKind.COMMAND_FAILED
        message, details = _one_line(error), {"error_type": type(error).__name__}
    try:
        trail._finish(kind, message, details)
    except (AuditError, StoreError, OSError) as audit_error:
        # The command's own error is what the user must see; this one is secondary.
        _warn(f"the audit log could not record this outcome: {_one_line(audit_error)}")


def _kind_for_code(code: int) -> EventKind:
    if code == 0:
        return EventKind.COMMAND_SUCCEEDED
    return EventKind.REFUSED if code == 1 else EventKind.COMMAND_FAILED


def _stage(project: Project, path: tuple[str, ...]) -> str | None:
    """The pipeline stage: DVC names it when it runs one; else the stage whose cmd this is."""
    running = os.environ.get("DVC_STAGE")
    if running:
        return running
    return _stage_commands(project).get(path[0]) if len(path) == 1 else None


def _stage_commands(project: Project) -> dict[str, str]:
    """``custodian`` sub-command -> stage name, from the stages' ``cmd`` in dvc.yaml."""
    try:
        stages = project.dvc_stages()
    except InputError:
        return {}
    found: dict[str, str] = {}
    for name, stage in stages.items():
        cmd = stage.get("cmd") if isinstance(stage, dict) else None
        for line in [cmd] if isinstance(cmd, str) else (cmd or []):
            words = str(line).split()
            if len(words) > 1 and words[0] == "custodian":
                found.setdefault(words[1], str(name))
    return found


def _params_sha256(project: Project) -> tuple[str | None, str | None]:
    """Canonical SHA-256 of params.yaml's content, and how it was hashed.

    A file that does not parse, or holds values JSON cannot carry (dates), is
    hashed byte for byte instead: a broken params.yaml is evidence too.
    """
    try:
        raw = project.params_path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return canonical_sha256(yaml.safe_load(raw)), None
    except (yaml.YAMLError, NotCanonicalizable):
        return sha256_hex(raw), "bytes"


def _actor() -> str:
    configured = os.environ.get("CUSTODIAN_ACTOR", "").strip()
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        # No login name (a container without a passwd entry): the uid still identifies.
        return f"uid:{os.getuid()}"


def _checked_hashes(hashes: Mapping[str, str]) -> dict[str, str]:
    bad = [path for path, value in hashes.items() if not _SHA256.fullmatch(str(value))]
    if bad:
        raise ValueError(f"not a lower-case hex SHA-256 for {', '.join(sorted(bad))}")
    return dict(hashes)


def _revoked_message(key: SigningKey) -> str:
    path = private_key_path(PIPELINE_KEY_NAME)
    return (
        f"the pipeline signing key {path} ({key.fingerprint[:16]}...) is revoked in the trust "
        f"store; move it away so a new one is made on next use (checkpoints it signed no "
        f"longer verify)"
    )


def _one_line(error: BaseException) -> str:
    # A click error (the CLI's) says it best through its own format_message().
    format_message = getattr(error, "format_message", None)
    text = format_message() if callable(format_message) else str(error)
    return " ".join(text.split()) or type(error).__name__


def _warn(message: str) -> None:
    print(f"custodian: warning: {message}", file=sys.stderr, flush=True)
