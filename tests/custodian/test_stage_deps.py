"""dvc.yaml's code deps: each stage declares the code it runs, so a code change reruns it.

``custodian <stage>`` runs ``custodian/stages/<stage>.py``; its deps must cover
that module and every repository module it imports, transitively
(:mod:`tests.custodian.imports`). The slow test edits the module that builds
``reports/metrics.json`` in a scratch project and asks real DVC what is stale.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.conftest import ROOT, dvc, make_project
from tests.custodian.imports import closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
METRICS_MODULE = Path("custodian/stages/evaluate.py")


def stage_module(stage: dict) -> str:
    """``custodian.stages.<sub-command>`` for a stage whose cmd is ``custodian <sub-command>``."""
    words = " ".join(stage["cmd"].split()).split()
    assert words[0] == "custodian", stage["cmd"]
    return f"custodian.stages.{words[1]}"


def declared(stage: dict) -> list[PurePosixPath]:
    return [PurePosixPath(next(iter(d)) if isinstance(d, dict) else d) for d in stage["deps"]]


def covered(path: Path, deps: list[PurePosixPath]) -> bool:
    pure = PurePosixPath(path.as_posix())
    return any(pure == dep or dep in pure.parents for dep in deps)


def is_docstring_only(path: Path) -> bool:
    body = ast.parse((ROOT / path).read_text(encoding="utf-8")).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stages_depending_on(path: Path) -> set[str]:
    return {name for name, stage in STAGES.items() if covered(path, declared(stage))}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_declares_the_code_it_runs(name: str) -> None:
    stage = STAGES[name]
    module = stage_module(stage)
    files = closure(module)
    assert Path(*module.split(".")).with_suffix(".py") in files  # the stage module exists
    missing = sorted(
        str(path)
        for path in files
        if not covered(path, declared(stage))
        # A package __init__ that holds only its docstring runs no code.
        and not (path.name == "__init__.py" and is_docstring_only(path))
    )
    assert not missing, f"dvc.yaml: stages.{name}.deps lacks {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    """The report stage imports the privacy ledger inside a function (it pulls in torch)."""
    assert Path("privacy/ledger.py") in closure("custodian.stages.report")
    assert Path("training/trainer.py") not in closure("custodian.stages.report")


@pytest.mark.slow
def test_editing_the_metrics_module_makes_exactly_its_stages_stale(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "project")
    # Stand-ins for every output, committed as the pipeline's current state: then dvc.lock
    # is up to date, and only what the edit touches can be stale.
    for stage in STAGES.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                path = repo / (next(iter(entry)) if isinstance(entry, dict) else entry)
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("[]\n" if path.suffix == ".json" else "stand-in\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "stand-in.txt").write_text("stand-in\n")
    dvc("commit", "--force", "--quiet", cwd=repo)
    assert json.loads(dvc("status", "--json", cwd=repo).stdout) == {}

    module = repo / METRICS_MODULE
    module.write_text(module.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    stale = set(json.loads(dvc("status", "--json", cwd=repo).stdout))

    assert stale == stages_depending_on(METRICS_MODULE)
    assert {"evaluate", "audit"} <= stale and "train" not in stale
