"""Checkpoints and saved models: safetensors + JSON, atomic, never unpickled, resumable."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import (
    CHECKPOINT_FILE,
    MODEL_CONFIG_FILE,
    MODEL_TENSORS_FILE,
    Checkpoint,
    capture_optimizer,
    capture_rng,
    load_checkpoint,
    load_model,
    restore_optimizer,
    restore_rng,
    save_checkpoint,
    save_model,
)
from training.errors import TrainingInputError
from training.model import Activation, Mlp, ModelConfig

WORKER = Path(__file__).with_name("resume_worker.py")


@pytest.fixture
def model() -> Mlp:
    torch.manual_seed(0)
    return Mlp(ModelConfig(hidden=(8, 4), activation=Activation.GELU), in_features=5)


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("loading must not unpickle")


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_saved_model_loads_without_pickle_and_predicts_the_same(
    tmp_path: Path, model: Mlp, no_pickle: None
) -> None:
    save_model(tmp_path, model, feature_names=["a", "b", "c", "d", "e"])
    loaded = load_model(tmp_path)
    features = torch.rand(3, 5)
    assert torch.equal(loaded.model(features), model.eval()(features))
    assert loaded.feature_names == ("a", "b", "c", "d", "e")
    assert loaded.model.config == model.config
    meta = json.loads((tmp_path / MODEL_CONFIG_FILE).read_text())
    assert meta["config"] == {"hidden": [8, 4], "activation": "gelu", "dropout": 0.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_CONFIG_FILE, MODEL_TENSORS_FILE]


def test_a_corrupted_model_file_is_refused_naming_it(tmp_path: Path, model: Mlp) -> None:
    save_model(tmp_path, model)
    tensors = tmp_path / MODEL_TENSORS_FILE
    tensors.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(TrainingInputError, match=f"{tensors}: SHA-256 differs"):
        load_model(tmp_path)
    # Even with a matching digest, a malformed file is a clear input error.
    meta = json.loads((tmp_path / MODEL_CONFIG_FILE).read_text())
    meta["tensors_sha256"] = __import__("hashlib").sha256(tensors.read_bytes()).hexdigest()
    (tmp_path / MODEL_CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(TrainingInputError, match=f"{tensors}: not a valid safetensors file"):
        load_model(tmp_path)


def test_a_model_config_that_does_not_match_its_tensors_is_refused(
    tmp_path: Path, model: Mlp
) -> None:
    save_model(tmp_path, model)
    path = tmp_path / MODEL_CONFIG_FILE
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "in_features": 6}))
    with pytest.raises(TrainingInputError, match="does not match"):
        load_model(tmp_path)
    path.write_text(json.dumps({**meta, "extra": 1}))
    with pytest.raises(TrainingInputError, match="not a custodian-mlp v1 model config"):
        load_model(tmp_path)


def test_checkpoints_replace_each_other_atomically(tmp_path: Path, no_pickle: None) -> None:
    save_checkpoint(tmp_path, Checkpoint({"x": torch.zeros(2)}, {"step": 1}))
    save_checkpoint(tmp_path, Checkpoint({"x": torch.ones(2)}, {"step": 2}))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None and loaded.meta == {"step": 2}
    assert torch.equal(loaded.tensors["x"], torch.ones(2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and CHECKPOINT_FILE in names  # no stale or temporary files
    assert load_checkpoint(tmp_path / "elsewhere") is None


def test_a_checkpoint_whose_tensors_changed_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, Checkpoint({"x": torch.zeros(2)}, {}))
    pointer = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    tensors = tmp_path / pointer["tensors"]
    tensors.write_bytes(tensors.read_bytes()[:-1] + b"\x01")
    with pytest.raises(TrainingInputError, match=f"{tensors}: SHA-256 differs"):
        load_checkpoint(tmp_path)


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path: Path) -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    adam = torch.optim.Adam(params, lr=0.1)
    params[0].grad = torch.tensor([1.0, -2.0, 3.0])
    adam.step()
    saved = capture_optimizer(adam)
    save_checkpoint(tmp_path, Checkpoint(saved.tensors, {"optimizer": saved.meta}))
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    restore_optimizer(fresh, loaded.tensors, loaded.meta["optimizer"])
    for key, value in adam.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][key], value)


def test_rng_states_round_trip(tmp_path: Path) -> None:
    saved = capture_rng()
    save_checkpoint(tmp_path, Checkpoint(saved.tensors, {"rng": saved.meta}))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    restore_rng(loaded.tensors, loaded.meta["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def read_log(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def test_sigkill_then_rerun_resumes_and_accounts_for_every_step(tmp_path: Path) -> None:
    run_dir, log, result = tmp_path / "run", tmp_path / "reserved.log", tmp_path / "result.json"
    command = [sys.executable, str(WORKER), str(run_dir), str(log), str(result)]
    first = subprocess.Popen([*command, "--delay", "0.02"])
    deadline = time.monotonic() + 60
    while not (run_dir / CHECKPOINT_FILE).exists():
        assert first.poll() is None, "the worker exited before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.01)
    time.sleep(0.3)  # some steps past the checkpoint, which a resume must not forget
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert not result.exists()
    reserved_at_kill = read_log(log)[-1]
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint is not None
    checkpoint_step = checkpoint.meta["state"]["step"]
    assert 0 < checkpoint_step <= reserved_at_kill < 120

    subprocess.run([*command, "--delay", "0"], check=True, timeout=120)
    outcome = json.loads(result.read_text())
    assert outcome["resumed_from_step"] == checkpoint_step
    assert outcome["steps"] == 120
    # reserve_chunk=1: log line r is written before step r starts. The first process took
    # steps 1..reserved_at_kill (the last possibly in flight); the second re-ran the steps
    # after its checkpoint, each counted on top.
    taken_after_resume = outcome["steps"] - checkpoint_step
    total = reserved_at_kill + taken_after_resume
    assert outcome["history_steps"] == outcome["accounted_steps"] == total
    assert read_log(log) == list(range(1, total + 1))
