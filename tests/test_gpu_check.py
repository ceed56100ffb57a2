"""``make gpu-check`` without a GPU: it refuses in one line, and its dry run plans every part.

The dry run is what keeps the GPU check from rotting between GPU windows: it collects
the CUDA tests, benches on CPU at a tiny size through the same summary and target code,
and checks the scratch project's params for every precision against the typed model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, project_env

SCRIPT = ROOT / "bench" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def check(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=project_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses only where there is no CUDA")
def test_refuses_without_cuda_in_one_line(tmp_path: Path) -> None:
    done = check(str(tmp_path / "summary.json"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("gpu-check: no CUDA device visible to torch")
    assert "--dry-run" in done.stderr
    assert not (tmp_path / "summary.json").exists()


def test_targets_are_judged_per_workload() -> None:
    figures = {
        "fast": {"max_rel_error_vs_opacus": 3e-7, "ratios": {
            "fast_bf16/nonprivate_bf16": 0.85, "fast_fp32/nonprivate_fp32": 0.95}},
        "slow": {"max_rel_error_vs_opacus": 2e-4, "ratios": {"fast_fp32/nonprivate_fp32": 0.89}},
    }  # fmt: skip
    judged = {(t["workload"], t["metric"]): t for t in gpu_check.judge_targets(figures)}
    assert len(judged) == 6
    assert all(judged["fast", metric]["passed"] for _, metric in judged if _ == "fast")
    assert not judged["slow", "fast_fp32/nonprivate_fp32"]["passed"]  # 0.89 < 0.9
    assert not judged["slow", "max_rel_error_vs_opacus"]["passed"]  # 2e-4 > 1e-4
    missing = judged["slow", "fast_bf16/nonprivate_bf16"]
    assert missing["value"] is None and not missing["passed"]  # not measured: not met
    passed = {"a": {"status": "passed"}, "replicas": {"status": "skipped"}}
    met = [judged["fast", "max_rel_error_vs_opacus"]]
    assert gpu_check._passed(passed, met, judged=True)
    assert not gpu_check._passed(passed, [*met, missing], judged=True)
    assert not gpu_check._passed({"a": {"status": "timeout"}}, met, judged=True)
    assert not gpu_check._passed(passed, met, judged=False)  # a dry run skips nothing


def test_a_command_past_its_time_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    """A timed-out ``dvc repro`` must not leave its ``custodian train`` on the GPU."""
    marker = tmp_path / "still-running"
    child = f"sleep 8 && touch {marker}"
    check_ = gpu_check.Check(False, tmp_path, time.monotonic() + 60, project_env())
    started = time.monotonic()
    with pytest.raises(gpu_check.PartTimeout, match="ran past 5 s"):
        check_.run(["sh", "-c", f"({child}) & wait"], tmp_path, 5)
    assert time.monotonic() - started < 7
    time.sleep(4)  # the grandchild would have touched the marker by now
    assert not marker.exists()


@pytest.mark.slow
def test_dry_run_plans_every_part_and_runs_what_cpu_can(tmp_path: Path) -> None:
    summary_path = tmp_path / "out" / "gpu-check.json"
    done = check("--dry-run", str(summary_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["format"] == "custodian-gpu-check/v1" and summary["mode"] == "dry-run"
    assert summary["passed"] is True and summary["targets_judged"] is False
    assert set(summary["environment"]) >= {"device", "torch", "cuda", "commit"}
    parts = summary["parts"]
    assert list(parts) == ["cuda_tests", "bench", "train_stage", "replicas"]

    tests = parts["cuda_tests"]["tests"]
    assert parts["cuda_tests"]["collected"] == len(tests) >= 20
    for expected in (
        "tests/privacy/test_clipping_cuda.py::test_fp32_matches_opacus_hooks_on_the_device",
        "tests/training/test_precision_cuda.py::test_fp16_static_loss_scale_recovers",
        "tests/training/test_precision.py::test_clipped_per_sample_norms_never_exceed",
    ):
        assert any(test.startswith(expected) for test in tests), expected

    bench = parts["bench"]
    ((name, figures),) = bench["workloads"].items()
    assert name == "mlp-64-256-256-2" and figures["device"] == "cpu"
    # The target (1e-4): the engine's fp32 margin and summation order move the
    # largest element-wise relative error to about 1e-5 on CPU.
    assert figures["fast_fp32"] > 0 and figures["max_rel_error_vs_opacus"] <= 1e-4
    assert 0 < figures["noise_share_of_fast_fp32_step"] < 1
    for planned in bench["planned"].values():  # the GPU commands, not run here
        assert planned[planned.index("--device") + 1] == "cuda"
        assert "fast_fp16" in planned and "fast_bf16" in planned
    assert set(bench["planned"]) == {"mlp-1024-4096-4096-2", "transformer"}
    metrics = {(t["workload"], t["metric"]) for t in summary["targets"]}
    assert metrics == {
        (name, "fast_bf16/nonprivate_bf16"),
        (name, "fast_fp32/nonprivate_fp32"),
        (name, "max_rel_error_vs_opacus"),
    }

    runs = parts["train_stage"]["runs"]
    assert {p: r["params"]["precision"] for p, r in runs.items()} == {
        "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}  # fmt: skip
    assert all(r["params"]["device"] == "cuda" for r in runs.values())
    assert parts["replicas"]["run"]["params"]["world_size"] == 2
