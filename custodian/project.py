"""Where a project keeps its evidence and where a user keeps private keys: the one place that knows.

Library code gets these paths as arguments; only the CLI layer decides them.

Project root
    ``$DVC_ROOT`` when DVC runs a stage, else the nearest directory at or above
    the working directory that holds ``.dvc/``, else the working directory.
``<root>/trust/`` (committed)
    The project's trust store: the public keys of the people who review and
    sign off (roles ``privacy-officer``, ``model-owner``, ...). It is versioned
    so that every clone, CI's included, trusts the same reviewers, and a key
    added or revoked is a change read in review like code.
``<root>/signoffs/`` (committed)
    ``<name>-<UTC time>-<digest>.dsse.json``: each sign-off, a DSSE envelope
    around an in-toto statement (:mod:`audits.signoff`).
``<root>/attestations/`` (committed)
    ``<subcategory>-<name>-<UTC time>-<digest>.dsse.json``: each person's signed
    attestation of a NIST AI RMF subcategory (:mod:`audits.attestation`).
``<root>/.custodian/`` (local, not committed)
    Evidence that must survive reruns, so it lives outside DVC outputs (DVC
    deletes a stage's outputs before running it again):

    - ``audit/log.jsonl``: the audit log;
    - ``audit/checkpoint.json`` and ``audit/checkpoint.history.jsonl``: its
      latest signed checkpoint and every earlier one;
    - ``trust/``: the local trust store, holding this checkout's pipeline key(s),
      which sign this checkout's log. The log is local, so the keys that sign it
      are too: committing them would make every clone trust every machine that
      ever ran the pipeline, and dirty ``git status`` after each ``make run``;
    - ``store.toml`` (optional): a shared PostgreSQL store (:mod:`stores.config`). With
      it, the audit log, its checkpoints, the local trust store and the privacy ledger
      are record streams in the server instead of the files above;
    - ``privacy-ledger.jsonl``: the privacy budget ledger.
``$CUSTODIAN_HOME`` (default ``~/.config/custodian``)
    ``keys/<name>.pem``: private keys, mode 0600, never inside the project.
    ``keys/pipeline.pem`` signs the audit log's checkpoints; it is created on
    first use.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from audits.log import AuditLog
from audits.trust import KeyName, KeyRole, KeySet, TrustStore
from audits.trust_root import RootKeySet, TrustRoot
from governance.errors import InputError

EVIDENCE_DIR = ".custodian"
TRUST_DIR = "trust"
SIGNOFF_DIR = "signoffs"
ATTESTATION_DIR = "attestations"
PIPELINE_KEY_NAME = "pipeline"

# What a sign-off signs and the release gate compares, relative to the project root:
# the model, and the reports that describe it. The manifest binds every other
# pipeline input and output by hash, so signing it covers them too.
COMPLIANCE_REPORT = "reports/compliance.json"
MANIFEST = "reports/manifest.json"
SIGNOFF_PATTERN = "*.dsse.json"
REPORT_FILES = (COMPLIANCE_REPORT, "reports/compliance.html")
SIGNED_ARTIFACTS = (
    "models/model.safetensors",
    "models/model.json",
    COMPLIANCE_REPORT,
    "reports/compliance.html",
    MANIFEST,
)
_GIT_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Project:
    """A Custodian project: a DVC repository and the evidence kept beside its outputs."""

    root: Path

    @classmethod
    def discover(cls, start: Path | None = None) -> Project:
        """The project containing ``start`` (default: the working directory)."""
        dvc_root = os.environ.get("DVC_ROOT")
        if dvc_root:
            return cls(Path(dvc_root).resolve())
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / ".dvc").is_dir():
                return cls(candidate)
        return cls(here)

    @property
    def evidence_dir(self) -> Path:
        return self.root / EVIDENCE_DIR

    @property
    def audit_log_path(self) -> Path:
        return self.evidence_dir / "audit" / "log.jsonl"

    @property
    def privacy_ledger_path(self) -> Path:
        return self.evidence_dir / "privacy-ledger.jsonl"

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_yaml_path(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def dvc_lock_path(self) -> Path:
        return self.root / "dvc.lock"

    def dvc_stages(self) -> dict[str, Any]:
        """The ``stages`` of dvc.yaml; InputError naming the file when it cannot be read."""
        where = self.dvc_yaml_path
        try:
            content = yaml.safe_load(where.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{where}: cannot read: {exc.strerror}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: not valid YAML ({type(exc).__name__})") from None
        stages = content.get("stages") if isinstance(content, dict) else None
        return stages if isinstance(stages, dict) else {}

    def audit_log(self, path: Path | None = None) -> AuditLog:
        """The project's audit log, or the log at ``path`` with its checkpoint beside it."""
        if path is None:
            # The project's own log follows the checkout's store (.custodian/store.toml).
            path = self.audit_log_path
            return AuditLog(path, path.parent / "checkpoint.json", store_dir=self.evidence_dir)
        return AuditLog(path, path.parent / "checkpoint.json")

    def trust_store(self) -> TrustStore:
        """The committed trust store: reviewers' public keys."""
        return TrustStore(self.root / TRUST_DIR)

    def trust_root(self) -> TrustRoot:
        """The signed root of trust for people's keys, beside the committed store."""
        return TrustRoot(self.root / TRUST_DIR)

    def people_keys(self) -> tuple[KeySet, tuple[str, ...]]:
        """The people's keys sign-offs and attestations are checked against, and every
        reason not to trust that set (none: the root verified).

        Before ``custodian trust init`` there is no root: the committed store is
        used, and its lack of a root is the reason.
        """
        store = self.trust_store()
        if not self.trust_root().exists():
            return store, (
                f"no {TRUST_DIR}/root.json: the key set is not signed by anyone "
                f"(custodian trust init)",
            )
        review = self.trust_root().review()
        revoked = {entry.fingerprint: entry for entry in store.entries() if entry.revoked}
        return RootKeySet(review.trusted, revoked), review.problems

    def local_trust_store(self) -> TrustStore:
        """The local trust store: the pipeline keys that sign this checkout's audit log."""
        # It follows the checkout's store: with a shared server, every clone trusts every
        # pipeline key that signs the shared log.
        return TrustStore(self.evidence_dir / TRUST_DIR, store_dir=self.evidence_dir)

    def trust_store_for(self, role: KeyRole) -> TrustStore:
        """Where a key of ``role`` is trusted: a person's in the project, the pipeline's locally."""
        return self.trust_store() if role.is_person else self.local_trust_store()

    @property
    def signoff_dir(self) -> Path:
        return self.root / SIGNOFF_DIR

    def signoff_files(self) -> dict[str, bytes]:
        """Every sign-off file (``signoffs/*.dsse.json``), by its path relative to the root."""
        return {
            path.relative_to(self.root).as_posix(): path.read_bytes()
            for path in sorted(self.signoff_dir.glob(SIGNOFF_PATTERN))
        }

    @property
    def attestation_dir(self) -> Path:
        return self.root / ATTESTATION_DIR

    def git_commit(self) -> str | None:
        """``git rev-parse HEAD`` in the project, or None outside git or before a first commit."""
        try:
            result = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=self.root,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        commit = result.stdout.strip()
        return commit if result.returncode == 0 and _GIT_COMMIT.fullmatch(commit) else None


def stage_entry_paths(stage: Mapping[str, Any], keys: Sequence[str], where: str) -> list[str]:
    """The paths a stage lists under ``keys`` (entries are a path or ``{path: options}``)."""
    return [_entry_path(entry, f"{where}.{key}") for key in keys for entry in stage.get(key) or []]


def _entry_path(entry: object, where: str) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        return str(next(iter(entry)))
    raise InputError(f"{where}: {entry!r} is not a path or a {{path: options}} mapping")


def custodian_home() -> Path:
    """``$CUSTODIAN_HOME``, or ``~/.config/custodian``."""
    configured = os.environ.get("CUSTODIAN_HOME")
    return Path(configured) if configured else Path.home() / ".config" / "custodian"


def private_key_path(name: str) -> Path:
    """Where the private key called ``name`` lives; refuses a name the trust store would refuse.

    Checked here, before any file is made: a name such as ``../x`` would otherwise
    put a private key outside the keys directory.
    """
    try:
        TypeAdapter(KeyName).validate_python(name)
    except ValidationError:
        raise InputError(
            f"key name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        ) from None
    return custodian_home() / "keys" / f"{name}.pem"
