"""The train stage end to end: DP model, privacy report, composed budget, refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dp_accounting import dp_event, pld

from privacy.accounting import SgdSteps, epsilon_of
from tests.conftest import custodian, dvc
from tests.custodian.test_signoff_cli import run_report_stage

pytestmark = pytest.mark.slow

SPEC_KEYS = {
    "epsilon",
    "delta",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "accountant",
    "max_grad_norm",
    "precision",
    "dataset_sha256",
    "budget",
    "unit",
    "people",
    "rows",
    "max_rows_per_person",
    "population",
    "covers",
}


def pld_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """Google's dp-accounting PLD accountant: an independent reference."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps
    )
    return pld.PLDAccountant().compose(event).get_epsilon(delta)


def _params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def set_params(repo: Path, section: str, **values) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def signed_off_by_two_people(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign-off over the real manifest (git commit, dvc.lock), with a passing report written
    here in the throwaway project: the report stage is not part of this test."""
    gate = {"id": "privacy_budget", "passed": True, "evidence": ["reports/privacy.json"]}
    report = {"format": "custodian-compliance/v1", "passed": True, "gates": [gate]}
    (project / "reports/compliance.json").write_text(json.dumps(report))
    (project / "reports/compliance.html").write_text("<html></html>")
    run_report_stage(project)  # the pack is bound to the manifest in the audit log
    people = (("olivia", "privacy-officer"), ("max", "model-owner"))
    admins = (("ada", "trust-admin"), ("bob", "trust-admin"))
    for name, role in people + admins:
        custodian("keys", "generate", name, "--role", role, cwd=project, check=True)
    trust = ("trust", "init", "--admin", "ada", "--admin", "bob", "--threshold", "2")
    custodian(*trust, "--as", "ada", cwd=project, check=True)
    custodian("trust", "sign", "--as", "bob", cwd=project, check=True)
    assert custodian("release", "check", cwd=project).returncode == 1
    for name in ("olivia", "max"):
        monkeypatch.setenv("CUSTODIAN_ACTOR", name)
        custodian("signoff", "--as", name, cwd=project, check=True)
    released = custodian("release", "check", cwd=project)
    assert released.returncode == 0, released.stdout + released.stderr


def test_dp_training_reports_reproducible_epsilon_and_composes_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_params(project, "train", epochs=2)
    # `dvc repro audit` runs evaluate; its audit run would be a third run in the ledger
    # (tests/test_evaluate_stage.py covers it).
    set_params(
        project, "evaluate", audit={**_params(project)["evaluate"]["audit"], "mode": "disabled"}
    )
    dvc("repro", "train", cwd=project)
    report = json.loads((project / "reports/privacy.json").read_text())
    assert set(report) >= SPEC_KEYS
    assert report["precision"] == "bf16" and report["accountant"] == "prv"
    # Person-level by default: people sampled, delta and the sample rate over people.
    assert report["unit"] == "person" and report["population"] == "rand-hie-participants"
    assert 4000 < report["people"] < 14000 < report["rows"] < 14300  # ~70% of 5,912 and 20,190
    assert report["max_rows_per_person"] == 5
    per_step = _params(project)["train"]["batch_size"]  # expected people per step
    assert report["sample_rate"] == 1 / -(-report["people"] // per_step)
    assert report["delta"] < 1 / (10 * report["people"]) and report["epsilon"] <= 3.0
    assert "early stopping" in " ".join(report["covers"]["not_covered"])
    reference = pld_epsilon(
        report["noise_multiplier"], report["sample_rate"], report["steps"], report["delta"]
    )
    assert reference <= report["epsilon"] <= reference * 1.02
    assert report["budget"]["spent_epsilon"] == pytest.approx(report["epsilon"])
    assert (project / "models/model.safetensors").is_file()
    curve = json.loads((project / "reports/train_curve.json").read_text())
    assert [row["epoch"] for row in curve] == [1, 2]

    # Each stage's outcome event carries the hashes of its deps and outs.
    events = json.loads(custodian("audit", "show", "--json", cwd=project, check=True).stdout)
    trained = [
        e["event"]
        for e in events
        if e["event"]["stage"] == "train" and e["event"]["kind"] == "command_succeeded"
    ]
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    assert set(trained[-1]["inputs"]) == set(declared)
    assert {"data/split", "reports/checks.json", "custodian/stages/train.py"} <= set(declared)
    assert set(trained[-1]["outputs"]) == {
        "models",
        "reports/privacy.json",
        "reports/train_curve.json",
    }

    # The audit stage binds every artifact; a changed model is named.
    dvc("repro", "audit", cwd=project)
    assert custodian("verify", "artifacts", cwd=project).returncode == 0
    signed_off_by_two_people(project, monkeypatch)
    config = project / "models/model.json"
    config.write_text(config.read_text().replace("relu", "tanh"))
    changed = custodian("verify", "artifacts", cwd=project)
    assert changed.returncode == 1 and "models/model.json (changed)" in changed.stderr
    blocked = custodian("release", "check", cwd=project)
    assert blocked.returncode == 1 and "changed_artifact" in blocked.stderr

    # A second run on the same data: the ledger composes both histories.
    dvc("repro", "train", "--force", "--single-item", cwd=project)
    second = json.loads((project / "reports/privacy.json").read_text())
    both = epsilon_of(
        [SgdSteps(r["noise_multiplier"], r["sample_rate"], r["steps"]) for r in (report, second)],
        report["delta"],
    )
    assert second["budget"]["spent_epsilon"] == pytest.approx(both, rel=1e-3)
    assert both < report["epsilon"] + second["epsilon"]
    ledger = json.loads(custodian("privacy", "ledger", "--json", cwd=project, check=True).stdout)
    assert len(ledger[0]["runs"]) == 2

    # A third run that would exceed the lifetime budget is refused before it starts.
    set_params(project, "privacy", lifetime_epsilon=4.0)
    refused = dvc("repro", "train", "--force", "--single-item", cwd=project, check=False)
    assert refused.returncode != 0
    message = refused.stderr + refused.stdout
    assert "privacy budget exceeded for population 'rand-hie-participants'" in message
    assert "lifetime 4" in message
    verify = custodian("audit", "verify", cwd=project)
    assert verify.returncode == 0, verify.stdout + verify.stderr
