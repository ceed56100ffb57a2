"""``custodian bench dp``: every variant runs, the JSON carries the keys the goals are judged by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import custodian

KEYS = (
    "nonprivate_fp32",
    "opacus_hooks_fp32",
    "opacus_ghost_fp32",
    "opacus_ghost_loader_fp32",
    "fast_fp32",
    "nonprivate_bf16",
    "fast_bf16",
)


def test_bench_dp_json_has_every_variant_and_the_error_against_opacus(tmp_path: Path) -> None:
    done = custodian(
        "bench", "dp", "--model", "16-32-2", "--rows", "2000", "--batch-size", "64",
        "--rounds", "1", "--seconds", "0.2", "--no-memory", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in KEYS:
        assert report[key] > 0, key
        assert 0 <= report["data_fraction"][key] < 1
    assert report["max_rel_error_vs_opacus"] < 1e-5
    assert report["max_rel_error_vs_opacus_bf16"] < 2e-2
    assert report["ratios"]["fast_fp32/nonprivate_fp32"] == (
        report["fast_fp32"] / report["nonprivate_fp32"]
    )
    assert report["noise_ms_per_step"] > 0  # the secure sampler's cost per step


def test_bench_dp_refuses_a_malformed_model(tmp_path: Path) -> None:
    done = custodian("bench", "dp", "--model", "64-x-2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "custodian: error: --model: expected widths like 64-256-256-2 or 'pipeline', got '64-x-2'"
    ]


@pytest.mark.slow
def test_bench_dp_memory_shows_what_per_sample_gradients_cost(tmp_path: Path) -> None:
    """Opacus hooks mode holds a gradient per sample (512 x 82k floats here); fast does not."""
    done = custodian(
        "bench", "dp", "--variant", "fast_fp32", "--variant", "opacus_hooks_fp32",
        "--rounds", "1", "--seconds", "0.1", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout)["peak_memory_mib"]
    assert set(peak) == {"fast_fp32", "opacus_hooks_fp32"}
    # 512 per-sample gradients of 82,690 floats are 161 MiB that the fast engine never holds.
    assert peak["opacus_hooks_fp32"] - peak["fast_fp32"] > 120
