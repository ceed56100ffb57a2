"""The artifact manifest: hashes every file under its paths and names each difference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from audits.manifest import (
    DifferenceKind,
    Manifest,
    ManifestError,
    build_manifest,
    check_manifest,
)

COMMIT = "c0ffee" + "0" * 34
LOCK = "ab" * 32


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "data" / "split").mkdir(parents=True)
    (tmp_path / "data" / "split" / "train.csv").write_text("a,b\n1,2\n")
    (tmp_path / "data" / "split" / "test.csv").write_text("a,b\n3,4\n")
    (tmp_path / "data" / "split" / "__pycache__").mkdir()
    (tmp_path / "data" / "split" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text('{"auc": 0.7}\n')
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    return tmp_path


def _build(root: Path) -> Manifest:
    return build_manifest(
        root,
        ["data/split", "./reports/metrics.json", "params.yaml", "data/split/"],
        COMMIT,
        LOCK,
        exclude=("__pycache__",),
    )


def test_manifest_lists_every_file_sorted_with_hash_size_and_bindings(root: Path) -> None:
    manifest = _build(root)
    assert [item.path for item in manifest.files] == [
        "data/split/test.csv",
        "data/split/train.csv",
        "params.yaml",
        "reports/metrics.json",
    ]
    train = next(item for item in manifest.files if item.path == "data/split/train.csv")
    assert train.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert train.size == 8
    assert (manifest.git_commit, manifest.dvc_lock_sha256) == (COMMIT, LOCK)
    assert manifest.paths == ("data/split", "params.yaml", "reports/metrics.json")
    assert check_manifest(root, manifest) == []


def test_manifest_round_trips_through_json(root: Path) -> None:
    manifest = _build(root)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_changed_missing_and_added_files_are_each_named(root: Path) -> None:
    manifest = _build(root)
    (root / "data/split/train.csv").write_text("a,b\n1,3\n")
    (root / "reports/metrics.json").unlink()
    (root / "data/split/extra.csv").write_text("a,b\n")
    (root / "data/split/__pycache__/y.pyc").write_bytes(b"\1")  # excluded: not a difference
    differences = {d.path: d for d in check_manifest(root, manifest)}
    assert {path: d.kind for path, d in differences.items()} == {
        "data/split/extra.csv": DifferenceKind.ADDED,
        "data/split/train.csv": DifferenceKind.CHANGED,
        "reports/metrics.json": DifferenceKind.MISSING,
    }
    changed = differences["data/split/train.csv"]
    assert changed.expected_sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert str(changed).startswith("changed: data/split/train.csv")


def test_a_whole_directory_gone_is_every_file_missing(root: Path) -> None:
    manifest = _build(root)
    for child in (root / "data/split").rglob("*.csv"):
        child.unlink()
    missing = [d.path for d in check_manifest(root, manifest) if d.kind is DifferenceKind.MISSING]
    assert missing == ["data/split/test.csv", "data/split/train.csv"]


def test_a_path_pattern_excludes_one_file(root: Path) -> None:
    manifest = build_manifest(root, ["reports", "params.yaml"], None, None, exclude=["reports/*"])
    assert [item.path for item in manifest.files] == ["params.yaml"]
    with pytest.raises(TypeError, match="not one string"):
        build_manifest(root, ["reports"], None, None, exclude="reports/*")


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "."])
def test_paths_outside_the_root_are_refused(root: Path, path: str) -> None:
    with pytest.raises(ManifestError, match="relative to the root"):
        build_manifest(root, [path], None, None)


def test_a_path_that_does_not_exist_is_refused(root: Path) -> None:
    with pytest.raises(ManifestError, match="models: not found"):
        build_manifest(root, ["models"], None, None)


def test_a_hand_edited_manifest_is_refused_on_load(root: Path) -> None:
    record = json.loads(_build(root).model_dump_json())
    record["files"].reverse()
    with pytest.raises(ValidationError, match="sorted"):
        Manifest.model_validate(record)
    record["files"].reverse()
    record["files"][0]["path"] = "elsewhere/file.csv"
    with pytest.raises(ValidationError):
        Manifest.model_validate(record)
