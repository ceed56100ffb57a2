"""``custodian check`` on real data: the RAND HIE file split wrongly and rightly."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import custodian

RANDHIE = Path(str(importlib.resources.files("statsmodels") / "datasets/randhie/src/randhie.csv"))


@pytest.fixture(scope="module")
def randhie() -> pd.DataFrame:
    return pd.read_csv(RANDHIE)


def write_split(directory: Path, frame: pd.DataFrame, test_mask: np.ndarray) -> tuple[Path, Path]:
    train, test = directory / "train.csv", directory / "test.csv"
    frame[~test_mask].to_csv(train, index=False)
    frame[test_mask].to_csv(test, index=False)
    return train, test


def test_row_level_split_is_flagged_for_group_and_target_leakage(tmp_path, randhie) -> None:
    test_mask = np.random.default_rng(0).random(len(randhie)) < 0.2
    train, test = write_split(tmp_path, randhie, test_mask)
    result = custodian(
        "check",
        "--train",
        str(train),
        "--test",
        str(test),
        "--label",
        "binexp",
        "--id-column",
        "zper",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    findings = report["findings"]
    assert report["not_compared"] == {}  # the two files have the same columns
    group = [f for f in findings if f["type"] == "group_leakage"]
    assert group and group[0]["severity"] == "critical" and group[0]["columns"] == ["zper"]
    shared = set(randhie[~test_mask]["zper"]) & set(randhie[test_mask]["zper"])
    assert group[0]["count"] == len(shared)  # identifiers found on both sides
    leaking = {
        c
        for f in findings
        if f["type"] == "target_leakage" and f["severity"] == "critical"
        for c in f["columns"]
    }
    # meddol and its log alone; then, without them, the four parts of meddol together.
    assert leaking == {"meddol", "lnmeddol", "outpdol", "drugdol", "suppdol", "inpdol"}
    rules = [f["rule"] for f in findings if f["type"] == "target_leakage" and f["rule"]]
    assert rules == ["binexp = (outpdol + drugdol + suppdol + inpdol > 0)"]
    assert "critical finding(s): " in result.stderr and "group_leakage" in result.stderr


def test_group_split_without_label_encoders_passes(tmp_path, randhie) -> None:
    # Whole households held out: the file has twins whose records are identical
    # apart from their person id, which a person-level split would put on both sides.
    household = randhie["zper"] // 10
    held_out = np.random.default_rng(1).choice(household.unique(), size=1200, replace=False)
    clean = randhie.drop(columns=["meddol", "lnmeddol", "outpdol", "drugdol", "suppdol", "inpdol"])
    train, test = write_split(tmp_path, clean, household.isin(held_out).to_numpy())
    result = custodian(
        "check",
        "--train",
        str(train),
        "--test",
        str(test),
        "--label",
        "binexp",
        "--id-column",
        "zper",
        cwd=tmp_path,
    )
    assert "group_leakage" not in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_input_exits_2(tmp_path, randhie) -> None:
    train, test = write_split(tmp_path, randhie.head(100), np.arange(100) >= 80)
    result = custodian(
        "check", "--train", str(train), "--test", str(test), "--label", "nope", cwd=tmp_path
    )
    assert result.returncode == 2 and "nope" in result.stderr
    assert "Traceback" not in result.stderr
    missing = custodian("check", "--train", "absent.csv", "--test", str(test), cwd=tmp_path)
    assert missing.returncode == 2 and "absent.csv: file not found" in missing.stderr
