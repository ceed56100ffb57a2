"""A hospital's first day (issue 17): their own 300 rows, with an email in a notes column.

The README's "your own data" walkthrough, as a new user runs it: the pipeline stops on
the PII finding before anything is trained; a bad ``evaluate.slices`` is refused before
any privacy is spent; once the notes are declared free text the pipeline completes with
a compliance pack, and no file git tracks, nor any under reports/ or models/, holds the
email or a patient id.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from tests.conftest import custodian, dvc, make_project, run

pytestmark = pytest.mark.slow

EMAIL = "jane.doe@example.com"
PATIENT_ID = re.compile(rb"P20[0-2]\d\d")


def clinic_csv(path: Path) -> None:
    """300 visits: id, ISO date, age, sex, blood pressure, short notes (one with an email)."""
    rng = random.Random(1)
    lines = ["patient_id,visit,age,sex,bp,notes,y"]
    short = ["ok", "follow up", "no change", "call back", "stable"]
    for i in range(300):
        age, bp = rng.randint(20, 85), round(rng.uniform(90, 180), 1)
        y = int(bp + age / 2 + rng.gauss(0, 15) > 160)
        note = f"pt asked to send results to {EMAIL}" if i == 7 else short[i % 5]
        sex = rng.choice("FM")
        lines.append(
            f"P{20000 + i},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d},{age},{sex},{bp},{note},{y}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# The README's small-data settings (section "Your own data"), as edits of params.yaml.
SMALL_DATA = {
    "  dataset: randhie ": "  dataset: clinic ",
    "  batch_size: 400 ": "  batch_size: 16 ",
    "  epochs: 12\n": "  epochs: 2\n",
    "  hidden: [32] ": "  hidden: [64, 64] ",
    "  delta: null ": "  delta: 1.0e-5 ",
    "  min_slice_rows: 30 ": "  min_slice_rows: 10 ",
}


def set_params(project: Path, slices: str) -> None:
    path = project / "params.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in SMALL_DATA.items():
        assert old in text or new in text, old
        text = text.replace(old, new)
    text = re.sub(
        r"\n  slices:.*?\n  robustness:", f"\n  slices: {slices}\n  robustness:", text, flags=re.S
    )
    path.write_text(text, encoding="utf-8")


def register(project: Path, *extra: str) -> str:
    result = custodian(
        "data",
        "add",
        "datasets/clinic.csv",
        "--license",
        "CC0-1.0",
        "--source",
        "file:clinic.csv",
        "--identifier",
        "patient_id",
        "--time",
        "visit",
        "--label",
        "y",
        "--sensitive",
        "sex",
        *extra,
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def ledger(project: Path) -> list:
    result = custodian("privacy", "ledger", "--json", cwd=project, check=True)
    return json.loads(result.stdout)


def test_own_data_walkthrough(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    clinic_csv(project / "datasets" / "clinic.csv")
    out = register(project)
    assert "column 'notes'" in out and "personal data" in out
    set_params(project, "{}")
    run(["git", "commit", "-qam", "clinic"], cwd=project)

    # 1. The email in a trained-on column stops the pipeline at the check stage.
    stopped = dvc("repro", cwd=project, check=False)
    assert stopped.returncode != 0
    assert "critical finding(s): pii" in stopped.stderr + stopped.stdout
    assert not (project / "models" / "model.json").exists()
    assert ledger(project) == []

    # 2. Declared free text; a slice column the data lacks is refused before any spend.
    register(project, "--text", "notes")
    set_params(project, "{age_band: [40]}")
    refused = dvc("repro", cwd=project, check=False)
    assert refused.returncode != 0
    assert "before any privacy is spent" in refused.stderr and "evaluate.slices" in refused.stderr
    assert ledger(project) == []

    # 3. Fixed: the pipeline completes with a compliance pack (a failed gate is reported).
    set_params(project, "{}")
    plan = custodian("plan", cwd=project)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    done = dvc("repro", cwd=project, check=False)
    assert "Traceback" not in done.stderr
    assert (project / "reports" / "compliance.json").is_file(), done.stderr
    assert (project / "reports" / "compliance.html").is_file()
    spend = ledger(project)
    assert [r["run_id"].split("-")[0] for r in spend[0]["runs"]] == ["train", "audit"]
    privacy = json.loads((project / "reports" / "privacy.json").read_text())
    # privacy.json names the total the audit run brings the dataset to, never less.
    assert privacy["budget"]["total_with_audit_epsilon"] >= spend[0]["spent_epsilon"] - 1e-9

    # 4. A change that does not alter the audit run's mechanism reuses it: nothing charged.
    path = project / "params.yaml"
    text = path.read_text(encoding="utf-8")
    marker = "  min_slice_rows: 10        # smaller slices are reported"
    assert marker in text
    path.write_text(text.replace(marker, marker.replace("10 ", "11 ")), encoding="utf-8")
    dvc("repro", "evaluate", cwd=project)
    assert ledger(project) == spend
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    assert metrics["slice_min_rows"] == 11 and metrics["privacy_audit"]["reused"] is True
    headline = json.loads((project / "reports" / "headline.json").read_text())
    assert headline["delta"] == "1e-05"

    # 5. Grep: no tracked file, report or model holds the email or a patient id.
    run(["git", "add", "-A"], cwd=project)
    tracked = run(["git", "ls-files", "-z"], cwd=project).stdout.split("\0")
    files = [project / f for f in tracked if f and f != "datasets/clinic.csv"]
    files += [p for d in ("reports", "models") for p in (project / d).rglob("*") if p.is_file()]
    assert len(files) > 50
    leaks = [
        str(p)
        for p in files
        if EMAIL.encode() in (content := p.read_bytes()) or PATIENT_ID.search(content)
    ]
    assert leaks == []
    # The check that would catch them: the data file itself holds both.
    data = (project / "datasets" / "clinic.csv").read_bytes()
    assert EMAIL.encode() in data and PATIENT_ID.search(data)
