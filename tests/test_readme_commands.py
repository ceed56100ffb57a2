"""The README's shell commands, run as written in a fresh clone from a new shell (issue 17).

Marker convention: the line just before every ```sh block in README.md is either
``<!-- test: run -->`` (this test runs the block) or ``<!-- test: skip: REASON -->`` (it
needs something a scratch clone does not have: a second machine, a GPU, the user's own
files, minutes of extra training; the reason says which, and where it is tested
instead). A block without a marker fails the fast test below, so every new block is a
decision. The ```text block after ``<!-- test: git status after make run -->`` is what
``git status --short`` prints after ``make run`` in a fresh clone; the slow test asserts it.

The slow test clones HEAD (the committed tree), then runs each ``run`` block verbatim with
``bash -e`` in a new shell: HOME is an empty directory, PATH the system's, no variable
of this test's environment but CUSTODIAN_HOME (where keys go; the README names it). The
clone's ``.venv`` is a symlink to the venv running the tests, with ``pyproject.toml``
older than its install stamp, so ``make run``'s install step is the no-op it is on a
second ``make run`` (a real install would take minutes and repoint the shared editable
install at the clone); ``.dvc/plots.html``, the one file ``make install`` writes into the
project, is written as it does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from custodian.plots_page import page as plots_page
from tests.conftest import ROOT, run

VENV = Path(sys.executable).parent.parent
MARKER = re.compile(r"<!-- test: (run|skip: (?P<reason>.+?)) -->")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    run: bool
    reason: str
    text: str


def readme_blocks(readme: str) -> list[Block]:
    """Every ```sh block of ``readme`` with the marker on the line above its fence."""
    lines = readme.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        if line.strip() != "```sh":
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        marker = MARKER.fullmatch(lines[index - 1].strip()) if index else None
        if marker is None:
            raise AssertionError(
                f"README.md:{index + 1}: a ```sh block without a `<!-- test: run -->` or "
                "`<!-- test: skip: REASON -->` line above it"
            )
        blocks.append(
            Block(
                line=index + 1,
                run=marker.group(1) == "run",
                reason=marker.group("reason") or "",
                text="\n".join(lines[index + 1 : end]) + "\n",
            )
        )
    return blocks


def stated_status(readme: str) -> str:
    """The ```text block the README says ``git status --short`` prints after ``make run``."""
    found = re.search(r"<!-- test: git status after make run -->\n```text\n(.*?)```", readme, re.S)
    assert found, "README.md: no `<!-- test: git status after make run -->` text block"
    return found.group(1)


def test_every_readme_command_block_is_run_or_skipped_with_a_reason() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert all(block.run or len(block.reason) > 20 for block in blocks)
    ran = [block for block in blocks if block.run]
    # The newcomer's path is run: the quick start and the commands right after it.
    assert ran[0].text.startswith("make run")
    assert any("dvc exp run -S" in block.text for block in ran)
    # One convention: outside make, a block starts its new shell by activating the venv.
    for block in ran[1:]:
        assert block.text.startswith(". .venv/bin/activate"), f"README.md:{block.line}"


def test_a_block_without_marker_is_refused() -> None:
    with pytest.raises(AssertionError, match="README.md:3: a ```sh block without"):
        readme_blocks("intro\n\n```sh\nmake run\n```\n")


def new_shell(block: Block, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CUSTODIAN_HOME": os.environ["CUSTODIAN_HOME"],
    }
    result = subprocess.run(
        ["bash", "-e", "-c", block.text], cwd=cwd, env=env, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"README.md:{block.line} exited {result.returncode}\n{output}"
    return result


def fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(ROOT), str(clone)], cwd=tmp_path)
    (clone / ".venv").symlink_to(VENV, target_is_directory=True)
    # .gitignore's `.venv/` matches a directory, not this symlink to one.
    with (clone / ".git" / "info" / "exclude").open("a", encoding="utf-8") as exclude:
        exclude.write("/.venv\n")
    stamp = VENV / ".installed"
    assert stamp.is_file(), f"{stamp}: run `make install` first"
    installed = stamp.stat().st_mtime
    os.utime(clone / "pyproject.toml", (installed - 60, installed - 60))
    (clone / ".dvc" / "plots.html").write_text(plots_page(), encoding="utf-8")
    assert run(["git", "status", "--short"], cwd=clone).stdout == ""
    return clone


@pytest.mark.slow
def test_readme_command_blocks_pass_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [block for block in readme_blocks(readme) if block.run]
    clone = fresh_clone(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    # A user's git identity: `dvc exp run` commits experiments (the README says so).
    (home / ".gitconfig").write_text("[user]\n\tname = New User\n\temail = new@example.org\n")
    params_before = (clone / "params.yaml").read_text(encoding="utf-8")

    make_run = new_shell(blocks[0], clone, home)
    assert "Running stage 'report'" in make_run.stdout
    assert run(["git", "status", "--short"], cwd=clone).stdout == stated_status(readme)

    # The failure: a registration `data add` staged, then dropped. Dropped the way
    # the README's limits say, `dvc exp run` neither conflicts nor brings it back.
    dropped = clone / "datasets" / "dropped.csv.dvc"
    dropped.write_text("outs: []\n", encoding="utf-8")
    run(["git", "add", str(dropped)], cwd=clone)
    assert "git rm -f datasets/NAME.csv.dvc" in readme
    run(["git", "rm", "-qf", str(dropped)], cwd=clone)

    for block in blocks[1:]:
        result = new_shell(block, clone, home)
        output = result.stdout + result.stderr
        assert "merge conflict" not in output.lower(), output
        if "dvc exp run -S" in block.text:
            assert "Data and pipelines are up to date" in output  # `dvc status` before it
            exp_run(block, clone, params_before, output)


def key_comments(params: str) -> list[str]:
    """The comments after a mapping key (``key: value  # comment``), in order."""
    return re.findall(r"^\s*[A-Za-z_]\w*:[^#\n]*#\s*(.*)$", params, re.M)


def exp_run(block: Block, clone: Path, params_before: str, output: str) -> None:
    """`dvc exp run -S KEY=VALUE` set that value, kept every other one, reran only what reads it."""
    setting = re.search(r"dvc exp run -S (\S+)=(\S+)", block.text)
    assert setting
    key, value = setting.groups()
    after = (clone / "params.yaml").read_text(encoding="utf-8")
    expected = yaml.safe_load(params_before)
    *parents, leaf = key.split(".")
    section = expected
    for parent in parents:
        section = section[parent]
    assert section[leaf] != yaml.safe_load(value)
    section[leaf] = yaml.safe_load(value)
    assert yaml.safe_load(after) == expected
    # What the README's limits say DVC's YAML round trip keeps: every key's comment.
    assert key_comments(after) == key_comments(params_before)
    # `policy` is read by `report` alone (`audit` hashes all of params.yaml): nothing is
    # retrained, no privacy is spent.
    assert re.findall(r"Running stage '(\w+)'", output) == ["audit", "report"], output
    # The experiment's results are in the workspace, and nothing else came back.
    status = run(["git", "status", "--short"], cwd=clone).stdout
    assert status == " M dvc.lock\n M params.yaml\n", status
    assert not (clone / "datasets" / "dropped.csv.dvc").exists()
