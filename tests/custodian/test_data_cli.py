"""``custodian data add/list/show`` against a real git + DVC project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import custodian, dvc, run

CSV = "id,year,age,y\n1,2020,30,0\n1,2021,31,1\n2,2020,40,1\n3,2021,50,0\n"


@pytest.fixture
def repo(project: Path) -> Path:
    (project / "datasets/clinic.csv").write_text(CSV)
    return project


def add(repo: Path, *extra: str):
    return custodian(
        "data",
        "add",
        "datasets/clinic.csv",
        "--license",
        "CC-BY-4.0",
        "--source",
        "https://example.org/clinic.csv",
        "--identifier",
        "id",
        "--time",
        "year",
        "--sensitive",
        "age",
        "--label",
        "y",
        *extra,
        cwd=repo,
    )


def test_add_tracks_with_dvc_and_stores_validated_meta(repo: Path) -> None:
    result = add(repo, "--citation", "Clinic 2026")
    assert result.returncode == 0, result.stderr
    dvc_file = yaml.safe_load((repo / "datasets/clinic.csv.dvc").read_text())
    meta = dvc_file["meta"]["custodian"]
    assert dvc_file["outs"][0]["path"] == "clinic.csv"
    assert meta["license"] == "CC-BY-4.0" and meta["rows"] == 4
    roles = {c["name"]: c["role"] for c in meta["columns"]}
    assert roles == {"id": "identifier", "year": "time", "age": "sensitive", "y": "label"}
    assert "clinic.csv" in (repo / "datasets/.gitignore").read_text()  # DVC, not git, holds it

    listed = json.loads(custodian("data", "list", "--json", cwd=repo, check=True).stdout)
    by_name = {item["name"]: item for item in listed}
    assert set(by_name) == {"clinic", "randhie"}
    assert by_name["clinic"]["sha256"] == meta["sha256"]
    assert by_name["randhie"]["license"] == "LicenseRef-PublicDomain"

    shown = json.loads(custodian("data", "show", "clinic", "--json", cwd=repo, check=True).stdout)
    assert shown["citation"] == "Clinic 2026" and shown["source"].startswith("https://")
    table = custodian("data", "list", cwd=repo, check=True).stdout
    assert "clinic" in table and "CC-BY-4.0" in table


def _edit_params(repo: Path, old: str, new: str) -> None:
    path = repo / "params.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_registered_dataset_is_ingested_by_the_pipeline(repo: Path) -> None:
    assert add(repo).returncode == 0
    # What git will commit is the record, not a .dvc file staged before it was written.
    staged = run(["git", "show", ":datasets/clinic.csv.dvc"], cwd=repo).stdout
    assert yaml.safe_load(staged)["meta"]["custodian"]["name"] == "clinic"
    _edit_params(repo, "  dataset: randhie ", "  dataset: clinic ")
    dvc("repro", "ingest", cwd=repo)
    record = json.loads((repo / "data/ingested/clinic.provenance.json").read_text())
    assert record["obligations"] == ["attribution"]
    # Only the datasets the pipeline uses are ingested.
    assert not (repo / "data/ingested/randhie.provenance.json").exists()


def test_an_unrelated_refused_registration_does_not_stop_ingest(repo: Path) -> None:
    assert add(repo).returncode == 0
    # The policy changed after clinic was registered: its license is no longer allowed.
    _edit_params(repo, "    - CC-BY-4.0\n", "")
    result = dvc("repro", "ingest", cwd=repo)
    assert "not ingested (not data.dataset or a check.references entry" in result.stdout
    assert "clinic" in result.stdout
    assert (repo / "data/ingested/randhie.provenance.json").is_file()
    # Used, the same registration is refused.
    _edit_params(repo, "  dataset: randhie ", "  dataset: clinic ")
    refused = dvc("repro", "ingest", cwd=repo, check=False)
    assert refused.returncode != 0 and "CC-BY-4.0 is not in policy.allowed_licenses" in (
        refused.stderr + refused.stdout
    )


@pytest.mark.parametrize(
    ("license_", "message"),
    [
        ("CC-BY-ND-4.0", "is not in policy.allowed_licenses"),
        ("LicenseRef-Hospital", "LicenseRef without an approval entry"),
    ],
)
def test_add_applies_the_license_policy(repo: Path, license_: str, message: str) -> None:
    result = add(repo, "--license", license_)
    assert result.returncode == 1 and message in result.stderr
    assert not (repo / "datasets/clinic.csv.dvc").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--license", "Bogus-2.0"), "license: unknown SPDX license id(s) Bogus-2.0"),
        (("--label", "nope"), "unknown column(s): nope"),
        (("--source", ""), "source"),
    ],
)
def test_bad_add_exits_2_with_one_line_and_writes_nothing(repo: Path, extra, message) -> None:
    args = ["--license", "CC-BY-4.0", "--source", "https://example.org/x", *extra]
    result = custodian("data", "add", "datasets/clinic.csv", *args, cwd=repo)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (repo / "datasets/clinic.csv.dvc").exists()


def test_file_outside_registry_refused(repo: Path) -> None:
    (repo / "elsewhere.csv").write_text(CSV)
    result = custodian(
        "data", "add", "elsewhere.csv", "--license", "MIT", "--source", "x", cwd=repo
    )
    assert result.returncode == 2 and "move the file there" in result.stderr


def test_hand_edited_meta_is_refused_naming_file_and_field(repo: Path) -> None:
    assert add(repo).returncode == 0
    path = repo / "datasets/clinic.csv.dvc"
    content = yaml.safe_load(path.read_text())
    content["meta"]["custodian"]["sha256"] = "not-a-hash"
    path.write_text(yaml.safe_dump(content))
    result = custodian("data", "list", cwd=repo)
    assert result.returncode == 2
    assert "datasets/clinic.csv.dvc: meta.custodian.sha256:" in result.stderr


def test_changed_data_without_re_adding_is_refused_at_ingest(repo: Path) -> None:
    assert add(repo).returncode == 0
    (repo / "datasets/clinic.csv").write_text(CSV + "4,2022,60,1\n")
    _edit_params(repo, "  dataset: randhie ", "  dataset: clinic ")
    result = custodian("ingest", "--out", "data/ingested", cwd=repo)
    assert result.returncode == 1 and "the data changed; re-register it" in result.stderr


def test_show_unknown_dataset(repo: Path) -> None:
    result = custodian("data", "show", "nope", cwd=repo)
    assert result.returncode == 2 and "'nope' is not registered" in result.stderr


def test_unknown_param_key_is_named(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["split"]["seeed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    result = custodian("split", "--ingested", "data/ingested", "--out", "data/split", cwd=repo)
    assert result.returncode == 2
    assert "params.yaml: split.seeed: Extra inputs are not permitted" in result.stderr
