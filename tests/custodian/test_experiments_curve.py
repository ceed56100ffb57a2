"""The privacy-utility curve's reading of `dvc exp show --json` (DVC 3's nesting)."""

from __future__ import annotations

from custodian.services.experiments import curve_points


def _state(rev: str, name: str | None, epsilon: float | None, accuracy: float) -> dict:
    metrics = {
        "reports/metrics.json": {
            "data": {
                "accuracy": accuracy,
                "worst_slice": {"attribute": "black", "slice": ">=0.5", "accuracy": accuracy - 0.1},
                "reference": {"accuracy": 0.79},
                "privacy_audit": {"epsilon_lower_bound": 0.0},
            }
        }
    }
    if epsilon is not None:
        metrics["reports/privacy.json"] = {"data": {"epsilon": epsilon, "target_epsilon": epsilon}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "metrics": metrics}, "error": None}


def test_curve_points_cover_workspace_baseline_and_experiments_sorted_by_epsilon() -> None:
    baseline = _state("abc123", "main", 3.0, 0.78)
    baseline["experiments"] = [
        {"name": "exp-a", "revs": [_state("e1", "exp-a", 8.0, 0.79)]},
        {"name": "exp-b", "revs": [_state("e2", "exp-b", 0.5, 0.70)]},
        {"name": "exp-c", "revs": [_state("e3", "exp-c", None, 0.70)]},  # failed before train
    ]
    # The workspace holds the last experiment's results after `dvc exp run`.
    shown = [_state("workspace", None, 8.0, 0.79), baseline]
    points = curve_points(shown)
    assert [p["name"] for p in points] == ["exp-b", "main", "exp-a"]
    assert [p["epsilon"] for p in points] == [0.5, 3.0, 8.0]
    assert points[0]["worst_slice_accuracy"] == 0.6 and points[0]["worst_slice"] == "black=>=0.5"
    assert points[-1]["reference_accuracy"] == 0.79
