"""`dvc exp run -S train.world_size=2` trains over two processes with one process's accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import custodian, dvc
from training.trainer import plan_steps


@pytest.mark.slow
def test_two_replicas_train_the_pipeline_with_single_process_accounting(project: Path) -> None:
    dvc("repro", "check", cwd=project)
    dvc("exp", "run", "-S", "train.world_size=2", "-S", "train.epochs=2", "train", cwd=project)
    report = json.loads((project / "reports" / "privacy.json").read_text())
    # Person level (the default): the replicas shard people, the plan is over people.
    assert report["unit"] == "person"
    per_step = yaml.safe_load((project / "params.yaml").read_text())["train"]["batch_size"]
    plan = plan_steps(report["people"], per_step, 2)
    assert report["world_size"] == 2
    assert report["sample_rate"] == plan.sample_rate
    assert report["steps"] == plan.total_steps
    assert 0 < report["epsilon"] <= report["target_epsilon"] + 1e-6
    # Only the leader logged the run and reserved its steps: one run, plan.total_steps.
    ledger = json.loads(custodian("privacy", "ledger", "--json", cwd=project, check=True).stdout)
    assert [run["steps"] for spend in ledger for run in spend["runs"]] == [plan.total_steps]
    entries = json.loads(custodian("audit", "show", "--json", cwd=project).stdout)
    started = [
        e
        for e in entries
        if (e["event"]["stage"], e["event"]["kind"]) == ("train", "command_started")
    ]
    assert len(started) == 1  # the follower repeats the command but does not log it
    assert (project / "models" / "model.safetensors").is_file()
