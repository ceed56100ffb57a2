"""Issue 20, attack 1: store files swapped for links, FIFOs or directories by someone who can
write the project. Each is refused (exit 2, one line naming the file and the cause); the
victim file keeps its bytes, and no copy of them lands in the project.

The commands run through :func:`custodian.cli.main` in this process (see
``test_audit_cli.py`` for why); the attacker's moves are plain file operations.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from custodian.project import PIPELINE_KEY_NAME, Project
from tests.custodian.test_audit_cli import invoke, signed, signed_base  # noqa: F401

# A victim's secret, with no trailing newline: the old writer took it for a torn last line,
# copied it into the project and truncated the victim.
SECRET = b"victim-data-key:3q2+7w==not-for-the-project"


@pytest.fixture
def root(signed: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A fresh copy of a project whose log, checkpoints and trust stores exist."""
    monkeypatch.setenv("CUSTODIAN_ACTOR", "alice")
    return signed


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim" / "data.key"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def _log(root: Path) -> Path:
    return Project(root).audit_log_path


def _history(root: Path) -> Path:
    return _log(root).with_name("checkpoint.history.jsonl")


def _checkpoint(root: Path) -> Path:
    return _log(root).with_name("checkpoint.json")


def _trust_index(root: Path) -> Path:
    return Project(root).local_trust_store().index_path


def _ledger(root: Path) -> Path:
    path = Project(root).privacy_ledger_path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _lock(root: Path) -> Path:
    return _log(root).with_name("log.jsonl.lock")


def _pipeline_key(root: Path) -> Path:
    return Path(os.environ["CUSTODIAN_HOME"]) / "keys" / f"{PIPELINE_KEY_NAME}.pem"


def _replace_with_link(path: Path, target: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _assert_untouched(victim: Path, root: Path) -> None:
    assert victim.read_bytes() == SECRET  # not truncated, not overwritten
    copies = [
        path
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink() and SECRET in path.read_bytes()
    ]
    assert copies == []
    assert not list(root.rglob("*.torn-*"))


def _assert_refused(result, path: Path, cause: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and cause in lines[0], lines[0]


# The next ordinary command (it logs, signs a checkpoint, and trusts a new key).
def _next_command(root: Path):
    return invoke("keys", "generate", "r2", "--role", "reviewer", cwd=root)


def _verify(root: Path):
    return invoke("audit", "verify", cwd=root)


STORE_FILES: dict[str, Callable[[Path], Path]] = {
    "log": _log,
    "checkpoint": _checkpoint,
    "history": _history,
    "trust-index": _trust_index,
    "ledger": _ledger,
    "lock": _lock,
    "pipeline-key": _pipeline_key,
}


def test_symlinked_log_after_deleting_the_checkpoint_is_refused(root: Path, victim: Path) -> None:
    """The issue's reproduction: log.jsonl -> a victim's key, checkpoint.json deleted."""
    _log(root).with_name("checkpoint.json").unlink()
    _replace_with_link(_log(root), victim)

    for result in (_next_command(root), _verify(root)):
        _assert_refused(result, _log(root), "symbolic link")
    _assert_untouched(victim, root)


@pytest.mark.parametrize("name", sorted(STORE_FILES))
def test_each_symlinked_store_file_is_refused_by_the_next_command(
    name: str, root: Path, victim: Path
) -> None:
    path = STORE_FILES[name](root)
    _replace_with_link(path, victim)
    # The ledger is read by verify's cross-check; every other file by the next command too.
    result = _verify(root) if name == "ledger" else _next_command(root)

    _assert_refused(result, path, "symbolic link" if name != "lock" else "not a regular")
    _assert_untouched(victim, root)


def test_symlinked_ledger_is_never_written_through(root: Path, victim: Path) -> None:
    from privacy.ledger import PrivacyLedger
    from stores.errors import UnsafeStoreFile

    _replace_with_link(_ledger(root), victim)
    with pytest.raises(UnsafeStoreFile, match="symbolic link"):
        PrivacyLedger(_ledger(root)).open_run("ab" * 32, "run", 1.1, 0.01, "prv", 1e-5)
    _assert_untouched(victim, root)


def test_symlinked_audit_directory_is_refused(root: Path, tmp_path: Path) -> None:
    directory = _log(root).parent
    elsewhere = tmp_path / "elsewhere"
    shutil.move(directory, elsewhere)
    directory.symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()}

    _assert_refused(_next_command(root), directory, "symbolic link")
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_fifo_or_directory_in_place_of_the_log_is_refused(kind: str, root: Path) -> None:
    log = _log(root)
    log.unlink()
    if kind == "fifo":
        os.mkfifo(log)  # opening it for reading would block forever without O_NONBLOCK
    else:
        log.mkdir()

    cause = "a FIFO" if kind == "fifo" else "a directory"
    for result in (_next_command(root), _verify(root)):
        _assert_refused(result, log, cause)
