"""The stage outputs' models: committed schemas are current, and a hand-edited file is exit 2.

Each file a stage writes and another reads is parsed through its model
(:mod:`custodian.outputs`); a key missing or of the wrong type is one line on
stderr naming the file and the field, exit 2, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from custodian.cli.main import main
from custodian.outputs import (
    ChecksReport,
    MetricsReport,
    PrivacyReport,
    SplitSummary,
    StageOutput,
    ValidationReport,
    blocking,
)
from custodian.services.schemas import SCHEMA_DIR, SCHEMAS, schema_text
from governance.checks import CheckConfig, Finding, FindingType
from tests.audits.evidence import provenance
from tests.conftest import make_project

SHA = "ab" * 32


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schema_is_current(name: str) -> None:
    committed = (SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(SCHEMAS[name]), "run: python -m custodian.services.schemas"


# --------------------------------------------------------------------------- valid files


def _metrics(**values: Any) -> dict[str, Any]:
    base = {"rows": 100, "positive_rate": 0.7, "accuracy": 0.8, "balanced_accuracy": 0.6}
    return base | {"roc_auc": 0.7, "f1": 0.85, "log_loss": 0.5} | values


def _worst() -> dict[str, Any]:
    return {
        "attribute": "black",
        "slice": "1",
        "accuracy": 0.7,
        "gap": 0.1,
        "gap_attribute": "black",
        "gaps": {"black": 0.1},
    }


def _perturbed() -> dict[str, Any]:
    level = {"level": 0.1, "accuracy": 0.79, "balanced_accuracy": 0.6, "roc_auc": 0.7}
    return {"columns": ["age"], "levels": {"10pct": level | {"log_loss": 0.51}}}


METRICS = MetricsReport(
    **_metrics(),
    split="test",
    baseline=_metrics(accuracy=0.7, roc_auc=0.5, predicts=1, note="majority class"),
    lift_over_baseline=0.1,
    calibration={"ece": 0.03, "bins": 10},
    slices={"black": {"0": _metrics(rows=80), "1": _metrics(rows=20, accuracy=0.7)}},
    slice_min_rows=10,
    slice_confidence=0.95,
    worst_slice=_worst(),
    fairness={"black": {"accuracy_gap": 0.1}},
    intersections={"black & female": {"1 & 1": _metrics(rows=10)}},
    intersection_fairness={},
    sensitive_values={"black": {"fractional": 0}},
    robustness={"seed": 0, "feature_noise": _perturbed(), "missing": _perturbed()},
    reference={"trained": False, "released": False, "note": "policy: DP only"},
    privacy_cost={"against": "baseline", "slices": {"black": {"0": 0.01, "1": 0.02}}},
    privacy_audit={
        "mode": "disabled",
        "epsilon_lower_bound": None,
        "confidence": 0.95,
        "canaries": 0,
        "delta": 1e-5,
        "accountant_epsilon": 3.0,
        "production_epsilon": 3.0,
        "mia_auc": 0.51,
        "mia_tpr_at_1pct_fpr": 0.01,
        "mia": "loss-based",
    },
)

FILES: dict[str, StageOutput] = {
    "data/split/split.json": SplitSummary(
        dataset="survey",
        dataset_sha256=SHA,
        strategy="group",
        seed=0,
        group_column="pid",
        time_column=None,
        dropped_rows=0,
        rows={"train": 2, "val": 0, "test": 1},
    ),
    "reports/validation.json": ValidationReport(
        success=True,
        suites=[
            {
                "dataset": "survey",
                "suite": "survey.schema",
                "success": True,
                "evaluated": 3,
                "successful": 3,
                "failed": [],
            }
        ],
        waived={},
    ),
    "reports/checks.json": ChecksReport(
        dataset_sha256=SHA,
        config=CheckConfig(label="label", id_column="pid"),
        waived={},
        findings=[
            Finding(
                type="group_leakage",
                severity="critical",
                count=1,
                columns=("pid",),
                train_rows=(0,),
                test_rows=(0,),
                detail="1 person in both splits",
            )
        ],
        val_findings=[],
        proxies=[{"inputs": ["linc"], "sensitive": ["income"], "severity": "warning"}],
        not_compared={},
        expectations={"train_vs_test": {"group_leakage": False}},
    ),
    "reports/privacy.json": PrivacyReport(
        epsilon=2.9,
        delta=1e-5,
        noise_multiplier=1.1,
        sample_rate=0.01,
        steps=300,
        accountant="prv",
        max_grad_norm=1.0,
        precision="fp32",
        clipping="fast",
        world_size=1,
        dataset_sha256=SHA,
        train_sha256="cd" * 32,
        target_epsilon=3.0,
        run_id="train-0123456789abcdef-1",
        epochs=3,
        best_epoch=2,
        stopped_early=False,
        resumed_from_step=None,
        budget={"lifetime_epsilon": 10.0, "spent_epsilon": 2.9},
        unit="person",
        neighbouring="add or remove all of one person's records",
        people=4137,
        rows=14134,
        max_rows_per_person=5,
        population="rand-hie-participants",
        covers={"covered": ["the released model weights"], "not_covered": ["test metrics"]},
    ),
    "reports/metrics.json": METRICS,
}


def test_a_written_output_reads_back_equal(tmp_path: Path) -> None:
    for name, output in FILES.items():
        path = tmp_path / Path(name).name
        output.write(path)
        assert type(output).read(path) == output


def test_checks_report_lists_test_and_val_findings_and_what_blocks() -> None:
    checks = FILES["reports/checks.json"]
    assert isinstance(checks, ChecksReport)
    assert [f.type.value for f in checks.all_findings()] == ["group_leakage"]
    assert blocking(checks.all_findings(), checks.waived) == list(checks.findings)
    assert blocking(checks.all_findings(), {FindingType.group_leakage: "reviewed"}) == []


# --------------------------------------------------------------------------- hand-edited files


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project holding every file the report stage reads up to the manifest, all valid."""
    repo = make_project(tmp_path_factory.mktemp("outputs") / "project")
    for directory, names in (("data/ingested", ["survey"]), ("data/split", ["train", "test"])):
        (repo / directory).mkdir(parents=True)
        for name in names:
            record = json.dumps(provenance("survey"))
            (repo / directory / f"{name}.provenance.json").write_text(record)
    (repo / "models").mkdir()
    (repo / "models/model.json").write_text("{}")
    (repo / "reports/train_curve.json").write_text("[]")
    return repo


def invoke(*args: str, cwd: Path) -> tuple[int, str]:
    """``custodian ARGS`` in this process: the exit code and stderr (a traceback fails here)."""
    err = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with (
            redirect_stdout(io.StringIO()),
            redirect_stderr(err),
            pytest.raises(SystemExit) as exit_,
        ):
            main(list(args))
    finally:
        os.chdir(previous)
    return exit_.value.code, err.getvalue()


def _drop(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _set(*where: str, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for key in where[:-1]:
            data = data[key]
        data[where[-1]] = value

    return edit


EDITS = [
    ("data/split/split.json", _drop("time_column"), "time_column: Field required"),
    ("data/split/split.json", _set("rows", "train", value="many"), "rows.train: Input should be"),
    ("reports/validation.json", _drop("success"), "success: Field required"),
    ("reports/validation.json", _set("suites", value={"a": 1}), "suites: Input should be"),
    ("reports/checks.json", _drop("val_findings"), "val_findings: Field required"),
    ("reports/checks.json", _set("findings", value="none"), "findings: Input should be"),
    ("reports/privacy.json", _drop("steps"), "steps: Field required"),
    ("reports/privacy.json", _set("budget", "spent_epsilon", value="n/a"), "budget.spent_epsilon"),
    ("reports/metrics.json", _drop("calibration"), "calibration: Field required"),
    ("reports/metrics.json", _set("slices", "black", value=[0.8]), "slices.black: Input should"),
    ("reports/metrics.json", _set("baseline", "predicts", value=2), "baseline.predicts: Input"),
    (
        "reports/metrics.json",
        _set("privacy_audit", "mia_auc", value="?"),
        "privacy_audit.mia_auc: Input should be a valid number",
    ),
]


def _write_valid(repo: Path) -> None:
    for name, output in FILES.items():
        output.write(repo / name)


def test_the_valid_files_parse_and_the_report_stops_at_the_missing_manifest(project: Path) -> None:
    _write_valid(project)
    code, err = invoke("report", cwd=project)
    assert code == 2 and err.startswith("custodian: error: reports/manifest.json: cannot read"), err


@pytest.mark.parametrize(("name", "edit", "field"), EDITS, ids=[f"{n}:{f}" for n, _, f in EDITS])
def test_a_hand_edited_output_is_exit_2_naming_file_and_field(
    project: Path, name: str, edit: Callable[[dict], None], field: str
) -> None:
    _write_valid(project)
    data = json.loads((project / name).read_text())
    edit(data)
    (project / name).write_text(json.dumps(data))
    code, err = invoke("report", cwd=project)
    assert code == 2, err
    assert err.startswith(f"custodian: error: {name}: {field}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("edit", "field"),
    [(_drop("files"), "files: Field required"), (_set("paths", value=7), "paths: Input should")],
)
def test_a_hand_edited_manifest_is_exit_2_naming_the_field(
    project: Path, edit: Callable[[dict], None], field: str
) -> None:
    manifest = {
        "format": "custodian-manifest/v1",
        "git_commit": None,
        "dvc_lock_sha256": None,
        "paths": ["params.yaml"],
        "files": [],
    }
    edit(manifest)
    (project / "reports/manifest.json").write_text(json.dumps(manifest))
    try:
        code, err = invoke("verify", "artifacts", cwd=project)
    finally:
        (project / "reports/manifest.json").unlink()
    assert code == 2, err
    assert err.startswith(f"custodian: error: reports/manifest.json: not a manifest: {field}"), err


def test_the_evaluate_stage_refuses_a_hand_edited_privacy_report(project: Path) -> None:
    """The evaluate stage reads privacy.json through the same model."""
    _write_valid(project)
    path = project / "reports/privacy.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"delta": "tiny"}))
    args = ["--splits", "data/split", "--model-dir", "models", "--privacy-report", str(path)]
    args += ["--out", "m.json", "--calibration-plot", "c.json", "--slices-plot", "s.json"]
    code, err = invoke("evaluate", *args, cwd=project)
    assert code == 2, err
    assert "reports/privacy.json: delta: Input should be a valid number" in err, err
