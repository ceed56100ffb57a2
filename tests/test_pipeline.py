"""The real pipeline, run by real DVC in a throwaway git repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import custodian, dvc, run

pytestmark = pytest.mark.slow


def ran_stages(output: str) -> list[str]:
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


def set_param(repo: Path, section: str, key: str, value: object) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_is_clean_then_noop_then_reruns_only_what_changed(project: Path) -> None:
    # Up to `check`: the data stages are deterministic (training is not: DP noise
    # must be unpredictable), so their dvc.lock entries reproduce byte for byte.
    first = dvc("repro", "check", cwd=project)
    assert ran_stages(first.stdout) == ["ingest", "validate", "split", "check"]
    assert "up to date" in dvc("status", "check", cwd=project).stdout
    # The committed lock and metrics are reproduced byte for byte: a fresh clone stays clean.
    assert run(["git", "status", "--porcelain"], cwd=project).stdout == ""

    second = dvc("repro", "check", cwd=project)
    assert ran_stages(second.stdout) == []

    split = json.loads((project / "data/split/split.json").read_text())
    assert split["strategy"] == "group" and split["group_column"] == "zper"
    assert sum(split["rows"].values()) == 20190
    test_record = json.loads((project / "data/split/test.provenance.json").read_text())
    ingested = json.loads((project / "data/ingested/randhie.provenance.json").read_text())
    assert test_record["parents"] == [
        {"name": "randhie", "sha256": ingested["sha256"], "license": ingested["license"]}
    ]
    assert test_record["produced_by"] == "split"
    assert test_record["obligations"] == ingested["obligations"] == ["approved_by_policy"]
    validation = json.loads((project / "reports/validation.json").read_text())
    assert validation["success"] and validation["suites"][0]["evaluated"] > 100
    assert (project / "reports/data_docs/index.html").is_file()

    set_param(project, "split", "seed", 7)
    third = dvc("repro", "check", cwd=project)
    assert ran_stages(third.stdout) == ["split", "check"]

    checks = json.loads((project / "reports/checks.json").read_text())
    assert not [
        f for f in checks["findings"] + checks["val_findings"] if f["severity"] == "critical"
    ]
    assert all(all(results.values()) for results in checks["expectations"].values())
    assert (project / "reports/check_docs/index.html").is_file()


def test_edited_license_reruns_and_blocks_ingest(project: Path) -> None:
    dvc("repro", "ingest", cwd=project)
    declaration = project / "datasets/randhie.yaml"
    declaration.write_text(
        declaration.read_text().replace("license: LicenseRef-PublicDomain", "license: CC-BY-NC-4.0")
    )
    set_param(project, "policy", "intended_use", "commercial")
    result = dvc("repro", cwd=project, check=False)
    assert result.returncode != 0
    assert (
        "dataset 'randhie': license 'CC-BY-NC-4.0' refused: CC-BY-NC-4.0 forbids commercial use"
    ) in result.stderr + result.stdout
    assert not (project / "data/ingested/randhie.csv").exists()


def test_edited_provenance_meta_alone_reruns_downstream(project: Path) -> None:
    dvc("repro", "check", cwd=project)
    declaration = project / "datasets/randhie.yaml"
    declaration.write_text(
        declaration.read_text().replace("citation: 'Cameron", "citation: 'Edited. Cameron")
    )
    result = dvc("repro", "check", cwd=project)
    assert ran_stages(result.stdout) == ["ingest", "validate", "split", "check"]
    record = json.loads((project / "data/split/train.provenance.json").read_text())
    assert record["citation"].startswith("Edited.")


def test_row_level_split_is_stopped_by_group_leakage(project: Path) -> None:
    result = dvc("exp", "run", "-S", "split.strategy=random", cwd=project, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    stopped = re.search(r"critical finding\(s\): ([a-z_, ]+)", output)
    assert stopped and "group_leakage" in stopped.group(1).split(", "), output[-2000:]
    checks = json.loads((project / "reports/checks.json").read_text())
    group = [f for f in checks["findings"] if f["type"] == "group_leakage"]
    assert group[0]["severity"] == "critical" and group[0]["columns"] == ["zper"]


def test_waived_finding_passes_and_is_logged(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"]["strategy"] = "random"
    params["check"]["waivers"] = {
        "group_leakage": "demonstration only: persons repeat across years",
        "exact_duplicate": "demonstration only: twins with identical records",
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc("repro", "check", cwd=project)
    checks = json.loads((project / "reports/checks.json").read_text())
    assert checks["waived"]["group_leakage"].startswith("demonstration only")
    log = json.loads(custodian("audit", "show", "--json", cwd=project, check=True).stdout)
    waivers = [e for e in log if e["event"]["kind"] == "waiver"]
    assert any("group_leakage" in json.dumps(e) for e in waivers)
