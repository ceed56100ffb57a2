"""Shared fixtures: the repository root, the CLI, and throwaway git+DVC projects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "Custodian Tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@custodian.invalid"
    return env


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=project_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def custodian(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "custodian"), *args], cwd=cwd, check=check)


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "dvc"), *args], cwd=cwd, check=check)


# What a fresh clone holds that the pipeline needs (code is installed in the venv).
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "datasets",
    "gx",
    ".dvc",
    ".dvcignore",
    ".gitignore",
    "dvc.lock",
    "data/.gitignore",
    "reports/.gitignore",
    "attestations",
    "governance",
    "custodian",
    "training",
    "privacy",
    "audits",
)


@pytest.fixture(autouse=True, scope="session")
def custodian_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Private keys of every CLI run in the tests go to a throwaway home, never ~/.config."""
    home = tmp_path_factory.mktemp("custodian-home")
    os.environ["CUSTODIAN_HOME"] = str(home)
    return home


def make_project(repo: Path) -> Path:
    """A git + DVC copy of this project at ``repo`` (created), committed."""
    repo.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                repo / name,
                ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache", "uncommitted"),
            )
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    run(["git", "init", "-q"], cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "project"], cwd=repo)
    return repo


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC copy of this project, committed, in a temporary directory."""
    return make_project(tmp_path / "project")
