"""``custodian check-large``: exit codes, one-line errors and the --out report.

The CLI runs in-process through ``custodian.cli.main`` (click's own runner
would bypass the exit-code mapping this file tests), in a temporary working
directory so that its audit log lands there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custodian.cli.main import main
from governance.provenance import ColumnRole, ColumnSpec, Provenance


def frame(n: int, seed: int, first_person: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "person": first_person + np.arange(n),
            "x": rng.normal(size=n).round(4),
            "y": rng.normal(size=n).round(4),
            "colour": rng.choice(["red", "green"], size=n),
            "label": rng.integers(0, 2, size=n),
        }
    )


@pytest.fixture
def splits(tmp_path: Path) -> tuple[Path, Path]:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    frame(500, 1, 0).to_parquet(train, index=False)
    frame(100, 2, 10_000).to_parquet(test, index=False)
    return train, test


def custodian(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``custodian check-large ARGS``."""
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exited:
        main(["check-large", "--memory-limit", "128MB", "--threads", "1", *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_clean_splits_exit_0(tmp_path, splits, capsys, monkeypatch) -> None:
    train, test = splits
    code, out, err = custodian(
        capsys, monkeypatch, tmp_path, "--train", str(train), "--test", str(test),
        "--label", "label", "--id-column", "person",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "no findings"
    assert "on a sample of at most 20,000 rows per split: target_leakage, proxy, pii" in out
    assert "not checked out of core: near_duplicate, reference_contamination" in out


def test_critical_finding_exits_1_and_out_is_written_atomically(
    tmp_path, splits, capsys, monkeypatch
) -> None:
    train, test = splits
    leaky = pd.read_parquet(test)
    leaky.loc[3, "person"] = 7  # a train identifier
    leaky.to_parquet(test, index=False)
    reports = tmp_path / "reports"
    reports.mkdir()
    out_file = reports / "checks-large.json"
    code, out, err = custodian(
        capsys, monkeypatch, tmp_path, "--train", str(train), "--test", str(test),
        "--id-column", "person", "--label", "label", "--out", str(out_file), "--json",
    )  # fmt: skip
    assert code == 1
    assert err.strip() == (
        f"custodian: error: 1 critical finding(s): group_leakage; see {out_file}"
    )
    printed = json.loads(out)
    assert json.loads(out_file.read_text()) == printed
    (group,) = [f for f in printed["findings"] if f["type"] == "group_leakage"]
    assert (group["count"], group["train_rows"], group["test_rows"]) == (1, [7], [3])
    assert sorted(p.name for p in reports.iterdir()) == ["checks-large.json"]  # no temp files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train", "missing.parquet"], "missing.parquet: file not found"),
        (["--label", "outcome"], "label 'outcome' is not a column of train"),
        (["--memory-limit", "lots"], "check-large: memory_limit: 'lots' is not a size"),
        (["--schema", "nothing.provenance.json"], "nothing.provenance.json: unreadable"),
    ],
    ids=["missing-file", "missing-column", "bad-limit", "bad-schema"],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path, splits, capsys, monkeypatch, args, message
) -> None:
    train, test = splits
    code, out, err = custodian(
        capsys, monkeypatch, tmp_path, "--train", str(train), "--test", str(test), *args
    )
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_failed_schema_suite_exits_1(tmp_path, splits, capsys, monkeypatch) -> None:
    train, test = splits
    record = Provenance(
        name="people",
        source="file:train.parquet",
        license="CC0-1.0",
        retrieved_at="2024-01-01T00:00:00Z",
        sha256="0" * 64,
        rows=500,
        columns=[
            ColumnSpec(name="person", type="integer", role=ColumnRole.identifier),
            ColumnSpec(name="x", type="number", minimum=-1, maximum=1),
            ColumnSpec(name="y", type="number"),
            ColumnSpec(name="colour", type="string", categories=["red", "green"]),
            ColumnSpec(name="label", type="integer", role=ColumnRole.label, categories=[0, 1]),
        ],
    )
    schema = tmp_path / "train.provenance.json"
    schema.write_text(json.dumps(record.to_json()))
    code, out, err = custodian(
        capsys, monkeypatch, tmp_path, "--train", str(train), "--test", str(test),
        "--schema", str(schema), "--gx-chunk-rows", "200",
    )  # fmt: skip
    assert code == 1
    assert err.strip() == "custodian: error: schema suite failed on train"
    assert "schema suite people.schema on train: FAILED" in out
    expected = int((np.abs(pd.read_parquet(train)["x"]) > 1).sum())
    assert f"expect_column_values_to_be_between x: {expected} unexpected" in out
