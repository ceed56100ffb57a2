"""The evaluate stage end to end: metrics contract, audit bound, budget charge, DVC views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from privacy.accounting import SgdSteps, epsilon_of
from tests.conftest import custodian, dvc

pytestmark = pytest.mark.slow

UTILITY = {"accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss"}
AUDIT = {
    "epsilon_lower_bound",
    "confidence",
    "canaries",
    "mia_auc",
    "mia_tpr_at_1pct_fpr",
    "accountant_epsilon",
    "delta",
    "mode",
}


EVALUATE = (
    "evaluate",
    "--splits",
    "data/split",
    "--model-dir",
    "models",
    "--privacy-report",
    "reports/privacy.json",
    "--out",
)


def set_params(repo: Path, section: str, **values: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_evaluate_reports_utility_slices_and_an_audit_below_epsilon(project: Path) -> None:
    set_params(project, "train", epochs=2)
    dvc("repro", "evaluate", cwd=project)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    privacy = json.loads((project / "reports/privacy.json").read_text())

    assert metrics["split"] == "test" and metrics["rows"] == 3030
    assert set(metrics) >= UTILITY | {"calibration", "slices", "worst_slice", "robustness"}
    assert set(metrics) >= {"reference", "privacy_cost", "privacy_audit"}
    assert 0.6 < metrics["accuracy"] < 0.9 and 0.5 < metrics["roc_auc"] < 0.9
    assert 0 <= metrics["calibration"]["ece"] < 0.3 and metrics["calibration"]["bins"] == 10

    # Every sensitive attribute of the provenance, every value or bucket, rows adding up.
    slices = metrics["slices"]
    assert set(slices) == {"black", "female", "xage", "income"}
    assert set(slices["female"]) == {"0", "1"}
    assert set(slices["xage"]) == {"<18", "[18,35)", "[35,50)", ">=50"}
    for by_slice in slices.values():
        assert sum(s["rows"] for s in by_slice.values()) == 3030
    worst = metrics["worst_slice"]
    assert worst["accuracy"] == slices[worst["attribute"]][worst["slice"]]["accuracy"]
    assert worst["accuracy"] <= metrics["accuracy"] and worst["gap"] > 0

    noise = metrics["robustness"]["feature_noise"]["levels"]
    assert set(noise) == {"1pct", "5pct", "10pct"}
    assert metrics["robustness"]["missing"]["columns"] == ["educdec", "ghindx", "mdeoff", "pioff"]

    # Every metric next to the majority-class baseline, overall and per slice.
    baseline = metrics["baseline"]
    labels_positive = metrics["positive_rate"]
    assert baseline["accuracy"] == pytest.approx(max(labels_positive, 1 - labels_positive))
    assert baseline["roc_auc"] == 0.5
    assert metrics["lift_over_baseline"] == pytest.approx(
        metrics["accuracy"] - baseline["accuracy"]
    )
    for by_slice in slices.values():
        for entry in by_slice.values():
            base = entry["base_rate"]
            assert entry["baseline_accuracy"] == pytest.approx(max(base, 1 - base))
            low, high = entry["accuracy_ci"]
            assert low <= entry["accuracy"] <= high
            assert entry["small"] == (entry["rows"] < 30)
    assert set(metrics["fairness"]) == set(slices)
    assert len(metrics["intersections"]) == 6  # every pair of the four sensitive attributes
    for pair in metrics["intersections"].values():
        assert sum(s["rows"] for s in pair.values()) == 3030
    assert metrics["sensitive_values"]["black"]["fractional"] > 0  # imputed 0/1 shares
    assert metrics["sensitive_values"]["xage"]["indicator"] is False  # years: continuous

    # The dataset's rule is DP-only (policy.allow_nonprivate_reference false): no reference
    # model is trained, and what is left is measured against the baseline.
    reference = metrics["reference"]
    assert reference["released"] is False and reference["trained"] is False
    assert not UTILITY & set(reference)
    cost = metrics["privacy_cost"]
    assert cost["against"] == "baseline"
    assert cost["lift_over_baseline"]["accuracy"] == pytest.approx(metrics["lift_over_baseline"])
    assert set(cost["slices"]) == set(slices)
    # The reference model is never written next to the released one.
    assert sorted(p.name for p in (project / "models").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]

    audit = metrics["privacy_audit"]
    assert set(audit) >= AUDIT
    assert audit["mode"] == "white_box" and audit["released"] is False
    assert "not the released model's weights" in audit["audited"]
    assert audit["canaries"] == 1500 and audit["confidence"] == 0.95
    assert audit["steps_scored"] == audit["steps"]
    assert audit["guesses"] == 200 and 0 <= audit["correct_guesses"] <= 200
    assert 0 <= audit["epsilon_lower_bound"] < audit["accountant_epsilon"] <= 3.0
    assert audit["production_epsilon"] == privacy["epsilon"]
    assert 0.4 < audit["mia_auc"] < 0.7

    # The audit run is charged to the dataset like the train run, and composed with it.
    ledger = json.loads(custodian("privacy", "ledger", "--json", cwd=project, check=True).stdout)
    runs = ledger[0]["runs"]
    assert sorted(r["run_id"].split("-")[0] for r in runs) == ["audit", "train"]
    composed = epsilon_of(
        [SgdSteps(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in runs],
        privacy["delta"],
    )
    assert audit["spent_epsilon_after"] == pytest.approx(composed, rel=1e-3)
    assert ledger[0]["spent_epsilon"] == pytest.approx(composed, rel=1e-3)
    verify = custodian("audit", "verify", cwd=project)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    calibration = json.loads((project / "reports/calibration.json").read_text())
    assert sum(b["count"] for b in calibration) == 3030
    assert all(0 <= b["confidence"] <= 1 and 0 <= b["accuracy"] <= 1 for b in calibration)

    shown = dvc("metrics", "show", "--json", cwd=project)
    assert "reports/metrics.json" in shown.stdout
    dvc("plots", "show", "--out", "plots-out", cwd=project)
    assert (project / "plots-out/index.html").is_file()

    # The manifest covers the evaluation.
    dvc("repro", "audit", cwd=project)
    manifest = (project / "reports/manifest.json").read_text()
    assert "reports/metrics.json" in manifest and "reports/calibration.json" in manifest

    # Where policy allows it, the non-private reference is trained and the cost taken from it.
    set_params(project, "policy", allow_nonprivate_reference=True)
    set_params(project, "evaluate", audit={"mode": "disabled"})
    allowed = custodian(
        *EVALUATE,
        "ref.json",
        "--calibration-plot",
        "c.json",
        "--slices-plot",
        "s.json",
        cwd=project,
    )
    assert allowed.returncode == 0, allowed.stderr
    with_reference = json.loads((project / "ref.json").read_text())
    reference = with_reference["reference"]
    assert reference["trained"] is True and set(reference) >= UTILITY
    assert with_reference["privacy_cost"]["accuracy"] == pytest.approx(
        reference["accuracy"] - with_reference["accuracy"]
    )

    # A numeric sensitive column without bucket edges is refused, naming the key.
    set_params(project, "evaluate", slices={"xage": [18, 35, 50], "income": [5000]})
    refused = custodian(
        *EVALUATE,
        "m.json",
        "--calibration-plot",
        "c.json",
        "--slices-plot",
        "s.json",
        cwd=project,
    )
    assert refused.returncode == 2
    assert "evaluate.slices.black: the sensitive column 'black' is numeric" in refused.stderr
    assert not (project / "m.json").exists()
