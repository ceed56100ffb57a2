"""Checks behind SECURITY.md: load paths, output paths and key paths.

Ruff's bandit rules (pyproject) already refuse pickle, ``yaml.load``, ``shell=True``,
``os.system`` and ``eval``/``exec``; what they cannot see is checked here.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from audits.files import UnsafeReplacement, atomic_directory
from custodian.project import private_key_path
from governance.errors import InputError
from tests.conftest import ROOT

PACKAGES = ("governance", "training", "privacy", "audits", "custodian")


def _sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def _calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str:
    return ast.unparse(call.func)


def test_torch_load_is_only_ever_called_with_weights_only() -> None:
    unsafe = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in _sources()
        for call in _calls(path)
        if _name(call) == "torch.load"
        and not any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )
    ]
    assert unsafe == []


def test_no_module_imports_pickle_or_its_relatives() -> None:
    forbidden = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n in forbidden]
    assert found == []


def test_subprocesses_take_argument_lists_never_a_shell_string() -> None:
    for path in _sources():
        for call in _calls(path):
            if _name(call).startswith("subprocess."):
                assert call.args and isinstance(call.args[0], ast.List), (
                    f"{path.relative_to(ROOT)}:{call.lineno}: pass the command as a list"
                )


@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc/passwd", ".hidden", "", "x" * 65])
def test_key_names_that_are_paths_are_refused_before_any_file_exists(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match="key name"):
        private_key_path(name)
    assert not (tmp_path / "home").exists()


def test_a_good_key_name_stays_inside_the_keys_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "home"))
    path = private_key_path("release-bot.v2")
    assert path.parent == tmp_path / "home" / "keys" and path.name == "release-bot.v2.pem"


@pytest.mark.parametrize(
    "target",
    [".", "..", "repo", "repo/.git/..", "file.txt", "link"],
    ids=["working-dir", "parent", "repository", "dot-dot", "a-file", "a-symlink"],
)
def test_atomic_directory_refuses_to_replace_what_is_not_an_output(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    (work / "repo" / ".git").mkdir(parents=True)
    (work / "file.txt").write_text("keep me")
    (work / "elsewhere").mkdir()
    (work / "elsewhere" / "keep.txt").write_text("keep me")
    os.symlink(work / "elsewhere", work / "link")
    monkeypatch.chdir(work)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeReplacement), atomic_directory(target) as staging:
        (staging / "out.csv").write_text("x")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_atomic_directory_replaces_an_ordinary_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "old.csv").write_text("old")
    with atomic_directory(Path("data/split")) as staging:
        (staging / "new.csv").write_text("new")
    assert [p.name for p in (tmp_path / "data" / "split").iterdir()] == ["new.csv"]


def test_a_staging_directory_left_by_a_killed_run_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "data" / ".split.k1ll3d.tmp"
    stale.mkdir(parents=True)
    (stale / "train.csv").write_text("sensitive rows")
    other = tmp_path / "data" / ".ingested.k1ll3d.tmp"
    other.mkdir()
    with atomic_directory(Path("data/split")) as staging:
        (staging / "train.csv").write_text("x")
    assert not stale.exists() and other.exists()  # only this output's leftovers
