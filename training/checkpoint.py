"""Checkpoints and saved models: safetensors for tensors, JSON for everything else.

Nothing here unpickles: tensors load with ``safetensors.torch.load`` and metadata with
``json``. Every file is written atomically (temporary file, ``fsync``, ``os.replace``,
``fsync`` of the directory), so a crash leaves the previous version or the new one.

A checkpoint is two files: ``checkpoint-<hash>.safetensors`` (content-addressed) and
``checkpoint.json``, which names that file and its SHA-256. The JSON is replaced last, so it
always points at a complete tensor file; stale tensor files are removed afterwards.

The run directory also holds ``reserved.json``: the number of accounted DP steps reserved so
far, written (durably) *before* those steps are taken. A resumed run counts from it rather
than from the checkpoint, so steps taken after the last checkpoint are never forgotten.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from audits.files import atomic_write_bytes
from training.errors import TrainingError, TrainingInputError
from training.model import Mlp, ModelConfig

__all__ = [
    "CHECKPOINT_FILE",
    "MODEL_CONFIG_FILE",
    "MODEL_TENSORS_FILE",
    "RESERVATION_FILE",
    "Checkpoint",
    "SavedModel",
    "capture_optimizer",
    "capture_rng",
    "load_checkpoint",
    "load_model",
    "read_reservation",
    "restore_optimizer",
    "restore_rng",
    "save_checkpoint",
    "save_model",
    "write_reservation",
]

CHECKPOINT_FILE = "checkpoint.json"
RESERVATION_FILE = "reserved.json"
MODEL_TENSORS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model.json"

_CHECKPOINT_FORMAT = "custodian-checkpoint"
_MODEL_FORMAT = "custodian-mlp"
_FORMAT_VERSION = 1
_TENSORS_GLOB = "checkpoint-*.safetensors"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Named tensors plus JSON metadata; the trainer decides what goes in each."""

    tensors: Mapping[str, torch.Tensor]
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SavedModel:
    """A model loaded from disk, with the feature layout it was trained on."""

    model: Mlp
    feature_names: tuple[str, ...]


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainingInputError(f"{path}: cannot read JSON ({err})") from err
    if not isinstance(data, dict):
        raise TrainingInputError(f"{path}: expected a JSON object")
    return data


def _tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    # safetensors refuses shared or strided storage; clones are cheap at these sizes.
    return safetensors.torch.save(
        {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    )


def _load_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of ``path``, checked against ``sha256`` when given; never unpickles."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TrainingInputError(f"{path}: cannot read ({err})") from err
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise TrainingInputError(f"{path}: SHA-256 differs from the one recorded for it")
    try:
        return safetensors.torch.load(data)
    except SafetensorError as err:
        raise TrainingInputError(f"{path}: not a valid safetensors file ({err})") from err


def save_model(directory: Path, model: Mlp, feature_names: Sequence[str] = ()) -> None:
    """Write ``model.safetensors`` and ``model.json`` (config, shapes, features, SHA-256)."""
    data = _tensor_bytes(model.state_dict())
    atomic_write_bytes(directory / MODEL_TENSORS_FILE, data)
    config = {
        "format": _MODEL_FORMAT,
        "version": _FORMAT_VERSION,
        "config": model.config.to_json(),
        "in_features": model.in_features,
        "out_features": model.out_features,
        "feature_names": list(feature_names),
        "tensors_sha256": hashlib.sha256(data).hexdigest(),
    }
    # The config is written last: a model.json always describes a complete tensor file.
    atomic_write_bytes(directory / MODEL_CONFIG_FILE, _json_bytes(config))


def load_model(directory: Path) -> SavedModel:
    """Load what :func:`save_model` wrote; any inconsistency raises TrainingInputError."""
    config_path = directory / MODEL_CONFIG_FILE
    meta = _read_json(config_path)
    expected = {
        "format",
        "version",
        "config",
        "in_features",
        "out_features",
        "feature_names",
        "tensors_sha256",
    }
    if set(meta) != expected or (meta["format"], meta["version"]) != (
        _MODEL_FORMAT,
        _FORMAT_VERSION,
    ):
        raise TrainingInputError(
            f"{config_path}: not a {_MODEL_FORMAT} v{_FORMAT_VERSION} model config"
        )
    tensors_path = directory / MODEL_TENSORS_FILE
    tensors = _load_tensors(tensors_path, str(meta["tensors_sha256"]))
    try:
        config = ModelConfig.from_json(meta["config"])
        model = Mlp(config, meta["in_features"], meta["out_features"])
    except TrainingInputError as err:
        raise TrainingInputError(f"{config_path}: {err}") from err
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise TrainingInputError(f"{tensors_path}: does not match {config_path} ({err})") from err
    names = meta["feature_names"]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise TrainingInputError(f"{config_path}: feature_names must be a list of strings")
    model.eval()
    return SavedModel(model=model, feature_names=tuple(names))


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``run_dir``, replacing the previous one atomically."""
    data = _tensor_bytes(checkpoint.tensors)
    sha256 = hashlib.sha256(data).hexdigest()
    tensors_name = f"checkpoint-{sha256[:16]}.safetensors"
    atomic_write_bytes(run_dir / tensors_name, data)
    pointer = {
        "format": _CHECKPOINT_FORMAT,
        "version": _FORMAT_VERSION,
        "tensors": tensors_name,
        "tensors_sha256": sha256,
        "meta": dict(checkpoint.meta),
    }
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, _json_bytes(pointer))
    for stale in run_dir.glob(_TENSORS_GLOB):
        if stale.name != tensors_name:
            stale.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint in ``run_dir``, or None if there is none."""
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return None
    pointer = _read_json(path)
    if set(pointer) != {"format", "version", "tensors", "tensors_sha256", "meta"} or (
        pointer["format"],
        pointer["version"],
    ) != (_CHECKPOINT_FORMAT, _FORMAT_VERSION):
        raise TrainingInputError(f"{path}: not a {_CHECKPOINT_FORMAT} v{_FORMAT_VERSION} file")
    name = pointer["tensors"]
    if not isinstance(name, str) or Path(name).name != name:
        raise TrainingInputError(f"{path}: invalid tensors file name {name!r}")
    tensors = _load_tensors(run_dir / name, str(pointer["tensors_sha256"]))
    if not isinstance(pointer["meta"], dict):
        raise TrainingInputError(f"{path}: meta must be a JSON object")
    return Checkpoint(tensors=tensors, meta=pointer["meta"])


def write_reservation(run_dir: Path, steps: int) -> None:
    """Durably record that accounted steps up to ``steps`` may be taken."""
    atomic_write_bytes(run_dir / RESERVATION_FILE, _json_bytes({"reserved_steps": steps}))


def read_reservation(run_dir: Path) -> int:
    """The steps :func:`write_reservation` last recorded (0 if it never ran)."""
    path = run_dir / RESERVATION_FILE
    if not path.exists():
        return 0
    steps = _read_json(path).get("reserved_steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise TrainingInputError(f"{path}: reserved_steps must be an integer >= 0")
    return steps


def capture_optimizer(optimizer: torch.optim.Optimizer) -> Checkpoint:
    """The optimizer's per-parameter state: tensors as ``optimizer.<index>.<key>``, scalars as JSON.

    For Opacus' ``DPOptimizer`` pass ``original_optimizer``: the wrapper holds no state of
    its own between steps. Hyper-parameters (``param_groups``) are not saved; they come
    from the config, which a resumed run must leave unchanged.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            elif value is None or isinstance(value, bool | int | float):
                scalars.setdefault(str(index), {})[key] = value
            else:
                raise TrainingError(
                    f"optimizer state {key!r} of type {type(value).__name__} cannot be saved"
                )
    return Checkpoint(tensors=tensors, meta=scalars)


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    scalars: Mapping[str, Mapping[str, Any]],
) -> None:
    """Load what :func:`capture_optimizer` saved into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in scalars.items():
        state.setdefault(int(index), {}).update(values)
    param_groups = optimizer.state_dict()["param_groups"]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (KeyError, ValueError, RuntimeError) as err:
        raise TrainingInputError(f"optimizer state does not fit this model ({err})") from err


def capture_rng() -> Checkpoint:
    """The global torch (CPU, CUDA), numpy and Python RNG states."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{device}"] = state
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    version, python_state, gauss_next = random.getstate()
    meta = {
        "numpy": {
            "kind": kind,
            "keys": base64.b64encode(np.asarray(keys, dtype="<u4").tobytes()).decode(),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return Checkpoint(tensors=tensors, meta=meta)


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng` captured (CUDA states only where CUDA exists)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(name for name in tensors if name.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(len(cuda))])
    numpy_state = meta["numpy"]
    keys = np.frombuffer(base64.b64decode(numpy_state["keys"]), dtype="<u4")
    np.random.set_state(
        (
            numpy_state["kind"],
            keys,
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = meta["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["state"]), python_state["gauss_next"])
    )
