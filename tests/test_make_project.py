"""Scratch projects come from the committed tree: a user's own changes never reach them.

After following the README a user has registered their own dataset and changed their
budget in the working tree; the tests' scratch projects (``make_project``) must not see
either, or ``make test`` would fail (or pass) depending on the checkout it runs in.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import ROOT, committed, make_project, run


def test_scratch_projects_ignore_uncommitted_datasets_and_params(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    run(["git", "clone", "-q", "--shared", str(ROOT), str(checkout)], cwd=tmp_path)
    params_path = checkout / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    committed_epsilon = params["privacy"]["target_epsilon"]
    params["privacy"]["target_epsilon"] = committed_epsilon + 1.5
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    (checkout / "datasets" / "clinic.csv").write_text("id,label\n1,0\n2,1\n")
    (checkout / "datasets" / "clinic.csv.dvc").write_text("outs:\n- path: clinic.csv\n")
    (checkout / ".dvc" / "cache").mkdir()
    (checkout / ".dvc" / "cache" / "stray").write_text("a user's cached data\n")

    project = make_project(tmp_path / "project", root=checkout)

    scratch = yaml.safe_load((project / "params.yaml").read_text())
    assert scratch["privacy"]["target_epsilon"] == committed_epsilon
    assert (project / "params.yaml").read_bytes() == committed("params.yaml", checkout)
    assert sorted(p.name for p in (project / "datasets").iterdir()) == sorted(
        Path(name).name
        for name in run(["git", "ls-files", "datasets"], cwd=checkout).stdout.split()
    )
    assert not (project / "datasets" / "clinic.csv.dvc").exists()
    assert not (project / ".dvc" / "cache").exists()
    # The scratch project is a clean, committed git repository of its own.
    assert run(["git", "status", "--porcelain"], cwd=project).stdout == ""
