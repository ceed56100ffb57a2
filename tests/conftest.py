"""Shared fixtures: the repository root, the CLI, and throwaway git+DVC projects."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from custodian.plots_page import page as plots_page

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def project_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "Custodian Tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@custodian.invalid"
    return env


def run(
    args: list[str], cwd: Path, check: bool = True, binary: bool = False
) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=project_env(), capture_output=True, text=not binary)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def custodian(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "custodian"), *args], cwd=cwd, check=check)


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "dvc"), *args], cwd=cwd, check=check)


# What a fresh clone holds that the pipeline needs (code is installed in the venv); every
# path must be committed.
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
    "stores",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped, and say so, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (make gpu-check runs it)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def custodian_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Private keys of every CLI run in the tests go to a throwaway home, never ~/.config."""
    home = tmp_path_factory.mktemp("custodian-home")
    os.environ["CUSTODIAN_HOME"] = str(home)
    return home


def committed(path: str, root: Path = ROOT) -> bytes:
    """``path`` as committed at ``root``'s HEAD, whatever the working tree holds."""
    return run(["git", "show", f"HEAD:{path}"], cwd=root, binary=True).stdout


def make_project(repo: Path, root: Path = ROOT) -> Path:
    """A git + DVC copy of this project at ``repo`` (created), committed.

    Built from what git has committed at ``root``'s HEAD, not from the working tree: a
    user's own registered datasets, edited params.yaml or DVC cache never reach the
    tests. (Code runs from the installed package, so uncommitted code is still tested;
    commit params.yaml or dvc.yaml changes before the tests that should see them.)
    """
    repo.mkdir(parents=True)
    archive = run(
        ["git", "archive", "--format=tar", "HEAD", "--", *PROJECT_FILES], cwd=root, binary=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(repo, filter="data")
    # What `make install` writes for `dvc plots show` (the page .dvc/config names).
    (repo / ".dvc" / "plots.html").write_text(plots_page(), encoding="utf-8")
    run(["git", "init", "-q"], cwd=repo)
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "project"], cwd=repo)
    return repo


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC copy of this project, committed, in a temporary directory."""
    return make_project(tmp_path / "project")
