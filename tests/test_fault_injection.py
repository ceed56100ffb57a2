"""Two trials of ``bench/fault_injection.py``: ``dvc repro`` SIGKILLed, rerun, nothing lost.

The script's own 20 random trials are the evidence; these two aim the kill at the
moments that matter most, whatever the machine's speed: while training is
reserving privacy budget, and while a data stage is writing its outputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from custodian.project import Project
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "fault_injection", ROOT / "bench/fault_injection.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


faults = _load_script()


def training_has_reserved(project: Path) -> bool:
    """The ledger holds a reservation of steps: the trainer is mid-run."""
    path = Project(project).privacy_ledger_path
    return path.exists() and b'"event":"steps"' in path.read_bytes()


def validation_has_started(project: Path) -> bool:
    log = Project(project).audit_log_path
    return log.exists() and b"custodian validate" in log.read_bytes()


@pytest.mark.parametrize(
    "kill_when",
    [training_has_reserved, validation_has_started],
    ids=["during-training", "during-validate"],
)
def test_killed_repro_reruns_without_losing_evidence(tmp_path: Path, kill_when) -> None:
    trial = faults.run_trial(1, kill_at=600.0, workdir=tmp_path, epochs=1, kill_when=kill_when)
    assert trial.killed, "the pipeline finished before the kill condition held"
    assert trial.passed, trial.problems
    assert trial.rerun_code == 0
    assert trial.verify_final == "ok"
    assert trial.ledger_final and sum(trial.ledger_final.values()) > 0
    if kill_when is training_has_reserved:
        assert trial.ledger_at_kill and sum(trial.ledger_at_kill.values()) > 0
        # The killed run is resumed, not restarted: one train run id holds every training
        # step (the evaluate stage's audit run is a run of its own).
        trains = {run for run in trial.ledger_final if run.startswith("train-")}
        assert trains == set(trial.ledger_at_kill)
