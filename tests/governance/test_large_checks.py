"""Out-of-core checks (governance.large) on real DuckDB and Parquet files.

Planted problems are found with exact counts and row lists; the findings
equal the in-memory scan's on the same data; a tiny memory limit, small row
groups and a split spread over several files give the same answer; the GX
schema suite aggregated over chunks equals GX on the whole frame.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from governance.checks import CheckConfig, Finding, FindingType, Severity, scan
from governance.errors import InputError
from governance.large import (
    NOT_SUPPORTED,
    SAMPLED,
    SKIPPED,
    SUPPORTED,
    ScanLimits,
    scan_large,
    scan_sampled,
)
from governance.large.engine import PY_WHITESPACE
from governance.large.limits import parse_size
from governance.provenance import ColumnRole, ColumnSpec, Provenance

N_TRAIN, N_TEST = 3000, 800
CONFIG = CheckConfig(label="label", id_column="person", time_column="day")
FEATURES = ["x1", "x2", "amount", "count", "colour", "city"]
COMPARED = [*FEATURES, "label"]
LIMITS = ScanLimits(memory_limit="256MB", threads=2)


def make_frame(n: int, seed: int, first_person: int, first_day: float) -> pd.DataFrame:
    """Clean data: one row per person, one row a day, continuous features (no chance repeats)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).round(4)
    return pd.DataFrame(
        {
            "person": first_person + np.arange(n),
            "day": first_day + np.arange(n, dtype=float),
            "x1": x[:, 0],
            "x2": x[:, 1],
            "amount": np.exp(x[:, 2]).round(2),
            "count": rng.poisson(3, size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "city": rng.choice([f"City {i}" for i in range(30)], size=n),
            "label": rng.integers(0, 2, size=n),
        }
    )


def planted(n_train: int = N_TRAIN, n_test: int = N_TEST) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test with one known instance of every supported problem (see the tests)."""
    train = make_frame(n_train, 1, 0, 0.0)
    test = make_frame(n_test, 2, 1_000_000, 10_000.0)
    test["label"] = test["label"].astype(float)  # room for a missing label
    train.loc[103, "x2"] = np.nan  # a missing value inside a copied row still matches
    # Exact duplicates, spelt differently: padded, upper-cased, a sub-rounding change.
    test.loc[5:9, COMPARED] = train.loc[100:104, COMPARED].to_numpy()
    test.loc[5:9, "city"] = "  " + test.loc[5:9, "city"].str.upper() + "\u00a0"
    test.loc[5:9, "x1"] += 1e-9
    # Repeats inside train (200 of 50; 201 and 202 of 51) and inside test (600 of 70).
    train.loc[200, COMPARED] = train.loc[50, COMPARED].to_numpy()
    train.loc[201:202, COMPARED] = train.loc[[51, 51], COMPARED].to_numpy()
    test.loc[600, COMPARED] = test.loc[70, COMPARED].to_numpy()
    # Two identifiers of train rows 300 and 301 reused by test rows 20-22.
    test.loc[20:21, "person"] = train.loc[300, "person"]
    test.loc[22, "person"] = train.loc[301, "person"]
    # Two train rows later than test's first days 10000, 10001 and 10002.
    train.loc[400:401, "day"] = 10_002.5
    # Train row 500 repeats row 60's features with the other label.
    train.loc[500, COMPARED] = train.loc[60, COMPARED].to_numpy()
    train.loc[500, "label"] = 1 - train.loc[60, "label"]
    # Test rows 30, 31 repeat train rows 600, 601 with the other label; row 40 has no label.
    test.loc[30:31, FEATURES] = train.loc[600:601, FEATURES].to_numpy()
    test.loc[30:31, "label"] = 1 - train.loc[600:601, "label"].to_numpy()
    test.loc[40, FEATURES] = train.loc[700, FEATURES].to_numpy()
    test.loc[40, "label"] = np.nan
    for frame in (train, test):
        frame["count"] = frame["count"].astype(np.int64)
    return train, test


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int = 1000) -> Path:
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("large")
    train, test = planted()
    return (
        write_parquet(train, directory / "train.parquet"),
        write_parquet(test, directory / "test.parquet", row_group_size=300),
    )


@pytest.fixture(scope="module")
def findings(files: tuple[Path, Path]) -> list[Finding]:
    return scan_large(*files, CONFIG, LIMITS)


def only(findings: list[Finding], kind: FindingType, side: str | None = None) -> Finding:
    """The one finding of ``kind`` (listing rows only on ``side``, if given)."""
    found = [
        f
        for f in findings
        if f.type is kind
        and (
            side is None
            or (side == "train" and not f.test_rows)
            or (side == "test" and not f.train_rows)
        )
    ]
    assert len(found) == 1, found
    return found[0]


def test_supported_types_are_the_five_out_of_core_checks() -> None:
    assert set(SUPPORTED) == {
        FindingType.exact_duplicate,
        FindingType.group_leakage,
        FindingType.temporal_leakage,
        FindingType.duplicate_rows,
        FindingType.conflicting_labels,
    }
    assert set(SUPPORTED) | set(NOT_SUPPORTED) == set(FindingType)


def test_exact_duplicates_after_normalisation(findings: list[Finding]) -> None:
    found = only(findings, FindingType.exact_duplicate)
    assert (found.severity, found.count) == (Severity.critical, 5)
    assert found.train_rows == (100, 101, 102, 103, 104)
    assert found.test_rows == (5, 6, 7, 8, 9)
    assert found.columns == tuple(COMPARED)


def test_duplicate_rows_within_each_split(findings: list[Finding]) -> None:
    in_train = only(findings, FindingType.duplicate_rows, "train")
    assert (in_train.count, in_train.train_rows, in_train.severity) == (
        3,
        (200, 201, 202),
        Severity.warning,
    )
    in_test = only(findings, FindingType.duplicate_rows, "test")
    assert (in_test.count, in_test.test_rows) == (1, (600,))


def test_group_leakage_counts_identifiers_and_lists_both_sides(findings: list[Finding]) -> None:
    found = only(findings, FindingType.group_leakage)
    assert (found.severity, found.count, found.columns) == (Severity.critical, 2, ("person",))
    assert (found.train_rows, found.test_rows) == ((300, 301), (20, 21, 22))


def test_temporal_leakage(findings: list[Finding]) -> None:
    found = only(findings, FindingType.temporal_leakage)
    # 2 of 3000 train rows is under temporal_critical_fraction (1%).
    assert (found.severity, found.count) == (Severity.warning, 2)
    assert (found.train_rows, found.test_rows) == ((400, 401), (0, 1, 2))
    assert "day 10000" in found.detail


def test_conflicting_labels_within_and_across(findings: list[Finding]) -> None:
    kind = FindingType.conflicting_labels
    within = only(findings, kind, "train")
    assert (within.count, within.train_rows) == (2, (60, 500))
    across = [f for f in findings if f.type is kind and f.train_rows and f.test_rows]
    assert len(across) == 1
    assert (across[0].count, across[0].train_rows, across[0].test_rows) == (2, (600, 601), (30, 31))
    assert not [f for f in findings if f.type is kind and 40 in f.test_rows]  # unlabelled row


def test_agrees_with_the_in_memory_scan(files: tuple[Path, Path], findings: list[Finding]) -> None:
    train, test = (pd.read_parquet(path) for path in files)
    in_memory = [f for f in scan(train, test, config=CONFIG) if f.type in SUPPORTED]
    assert findings == in_memory  # counts, severities, row lists, details and order


def messy(n: int, seed: int, start: str) -> pd.DataFrame:
    """Few distinct rows, spellings the normalisation must equate, missing values everywhere."""
    rng = np.random.default_rng(seed)
    spellings = ["x", " X ", "x\u00a0y", "x  y", "1", "1.0", " 01 ", "+1", "nan", "inf", "-inf"]
    spellings += ["1e3", "1000", "Straße", "STRASSE", "-0", "0", "0.24", "0.25", None]
    return pd.DataFrame(
        {
            "a": rng.integers(0, 3, size=n),
            # Ties at one decimal round to even: 0.25 as 0.2, 1.25 as 1.2, 0.75 as 0.8.
            "b": rng.choice([0.2, 0.25, 0.3, 1.2, 1.25, 1.3, 0.75, -0.0, 0.0, np.nan], size=n),
            "s": pd.Series(rng.choice(np.array(spellings, dtype=object), size=n), dtype=object),
            "when": pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, 9, size=n), unit="D"),
            "group": rng.choice(np.array(["p1", "P2 ", "p3", None], dtype=object), size=n),
            "label": rng.choice(np.array(["yes", "no", None], dtype=object), size=n),
        }
    )


MESSY_CONFIG = CheckConfig(
    label="label", id_column="group", time_column="when", float_decimals=1, max_rows_listed=7
)


def test_agrees_with_the_in_memory_scan_on_messy_values(tmp_path: Path) -> None:
    train, test = messy(400, 3, "2020-01-01"), messy(120, 4, "2020-01-05")
    paths = (
        write_parquet(train, tmp_path / "a.parquet"),
        write_parquet(test, tmp_path / "b.parquet"),
    )
    in_memory = [
        f
        for f in scan(*(pd.read_parquet(p) for p in paths), config=MESSY_CONFIG)
        if f.type in SUPPORTED
    ]
    out_of_core = scan_large(*paths, MESSY_CONFIG, LIMITS)
    assert {f.type for f in in_memory} == set(SUPPORTED)  # every path exercised
    assert any(f.rows_truncated for f in in_memory)
    exact = only(in_memory, FindingType.exact_duplicate)
    assert exact.severity is Severity.warning  # few distinct rows: the chance rule applies
    assert out_of_core == in_memory


def test_csv_agrees_with_the_in_memory_scan_of_the_same_csv(tmp_path: Path) -> None:
    train, test = messy(400, 5, "2020-01-01"), messy(120, 6, "2020-01-05")
    paths = tmp_path / "a.csv", tmp_path / "b.csv"
    for frame, path in zip((train, test), paths, strict=True):
        frame.to_csv(path, index=False)
    in_memory = [
        f
        for f in scan(*(pd.read_csv(p) for p in paths), config=MESSY_CONFIG)
        if f.type in SUPPORTED
    ]
    assert in_memory
    assert scan_large(*paths, MESSY_CONFIG, LIMITS) == in_memory


def test_tiny_memory_small_row_groups_and_many_files_give_the_same_answer(tmp_path: Path) -> None:
    train, test = planted(60_000, 15_000)
    one = write_parquet(train, tmp_path / "train.parquet", row_group_size=50_000)
    test_path = write_parquet(test, tmp_path / "test.parquet", row_group_size=50_000)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, start in enumerate((0, 25_000, 40_000)):
        stop = {0: 25_000, 25_000: 40_000, 40_000: len(train)}[start]
        write_parquet(train.iloc[start:stop], parts / f"part-{i}.parquet", row_group_size=700)
    reference = scan_large(one, test_path, CONFIG, LIMITS)
    tiny = ScanLimits(memory_limit="16MB", threads=1, temp_directory=tmp_path / "spill")
    assert scan_large(parts, test_path, CONFIG, tiny) == reference
    assert only(reference, FindingType.exact_duplicate).train_rows == (100, 101, 102, 103, 104)
    assert not list((tmp_path / "spill").iterdir())  # the scratch directory is removed


# --- the GX schema suite, chunk by chunk -------------------------------------------------


def suite_frame(n: int = 1000) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "pid": np.arange(n),
            "year": np.arange(n) % 5 + 2000,
            "x": np.linspace(0.0, 1.0, n),
            "c": np.where(np.arange(n) % 2, "a", "b"),
        }
    )
    frame.loc[n - 1, "x"] = 7.0  # out of range, in the last chunk
    frame.loc[n - 2, "pid"] = 3  # repeats row 3's id (and its year) nine chunks later
    frame.loc[n - 3, "pid"] = 4  # repeats row 4's id, in another year
    return frame


def suite_record(rows: int, time_role: bool) -> Provenance:
    return Provenance(
        name="demo",
        source="file:demo.parquet",
        license="CC0-1.0",
        retrieved_at="2024-01-01T00:00:00Z",
        sha256="0" * 64,
        rows=rows,
        columns=[
            ColumnSpec(name="pid", type="integer", role=ColumnRole.identifier),
            ColumnSpec(
                name="year",
                type="integer",
                minimum=2000,
                maximum=2004,
                role=ColumnRole.time if time_role else ColumnRole.feature,
            ),
            ColumnSpec(name="x", type="number", minimum=0, maximum=1),
            ColumnSpec(name="c", type="string", categories=["a", "b"]),
        ],
    )


def whole_frame_failures(record: Provenance, frame: pd.DataFrame) -> dict:
    """GX itself on the whole frame: failed expectation (type, column) -> unexpected count."""
    import great_expectations as gx

    from governance.expectations import schema_suite
    from governance.large.suite import _context

    context = _context()
    batch = (
        context.data_sources.add_pandas("whole")
        .add_dataframe_asset("whole")
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(schema_suite(record))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="whole", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    return {
        (r.expectation_config.type, r.expectation_config.kwargs.get("column")): (
            (r.result or {}).get("unexpected_count")
        )
        for r in result.results
        if not r.success
    }


@pytest.mark.parametrize("time_role", [False, True], ids=["unique-id", "unique-id-and-time"])
def test_chunked_suite_equals_gx_on_the_whole_frame(tmp_path: Path, time_role: bool) -> None:
    from governance.large.suite import schema_suite_large

    frame = suite_frame()
    record = suite_record(len(frame), time_role)
    path = write_parquet(frame, tmp_path / "demo.parquet", row_group_size=128)
    outcome = schema_suite_large(path, record, ScanLimits(threads=1, gx_chunk_rows=100))
    chunked = {(f.expectation, f.column): f.unexpected_count for f in outcome.failed}
    assert chunked == whole_frame_failures(record, frame)
    assert chunked[("expect_column_values_to_be_between", "x")] == 1
    unique = (
        ("expect_compound_columns_to_be_unique", None)
        if time_role
        else ("expect_column_values_to_be_unique", "pid")
    )
    assert chunked[unique] == (2 if time_role else 4)
    assert not outcome.success and outcome.evaluated == outcome.successful + 2


def test_chunked_suite_passes_clean_data_and_checks_the_whole_row_count(tmp_path: Path) -> None:
    from governance.large.suite import schema_suite_large

    frame = suite_frame(400)
    frame["x"] = frame["x"].clip(0, 1)
    frame["pid"] = np.arange(len(frame))
    for suffix in ("parquet", "csv"):
        path = tmp_path / f"demo.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        else:
            write_parquet(frame, path, row_group_size=64)
        limits = ScanLimits(threads=1, gx_chunk_rows=150)
        passed = schema_suite_large(path, suite_record(len(frame), True), limits)
        assert passed.success and passed.successful == passed.evaluated, passed
        short = schema_suite_large(path, suite_record(len(frame) + 1, True), limits)
        assert [(f.expectation, f.unexpected_count) for f in short.failed] == [
            ("expect_table_row_count_to_equal", None)
        ]


# --- bad input ---------------------------------------------------------------------------


def test_missing_file_names_it(files: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.parquet: file not found"):
        scan_large(tmp_path / "nope.parquet", files[1], CONFIG, LIMITS)
    with pytest.raises(InputError, match="directory holds no Parquet files"):
        scan_large(tmp_path, files[1], CONFIG, LIMITS)


def test_column_mismatch_and_missing_declared_column(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    test = make_frame(50, 2, 0, 0.0)
    narrow = write_parquet(test.drop(columns=["city"]), tmp_path / "narrow.parquet")
    with pytest.raises(
        InputError, match=r"columns differ: only in train \['city'\], only in test \[\]"
    ):
        scan_large(files[0], narrow, CONFIG, LIMITS)
    config = CheckConfig(label="outcome")
    with pytest.raises(InputError) as raised:
        scan_large(*files, config, LIMITS)
    assert f"label 'outcome' is not a column of train ({files[0]})" in str(raised.value)


def test_sealed_and_unsupported_files_are_refused(files: tuple[Path, Path], tmp_path: Path) -> None:
    sealed = tmp_path / "train.csv.enc"
    sealed.write_bytes(b"\x89CUSTENC" + bytes(64))
    disguised = tmp_path / "train.parquet"
    disguised.write_bytes(b"\x89CUSTENC" + bytes(64))
    for path in (sealed, disguised):
        with pytest.raises(InputError, match=rf"{path.name}: sealed \(encrypted\) file"):
            scan_large(path, files[1], CONFIG, LIMITS)
    text = tmp_path / "train.txt"
    text.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"train\.txt: unsupported file type '\.txt'"):
        scan_large(text, files[1], CONFIG, LIMITS)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"broken\.parquet: not a readable Parquet file"):
        scan_large(broken, files[1], CONFIG, LIMITS)


def _text_number(train: pd.DataFrame, test: pd.DataFrame) -> None:
    test["x1"] = test["x1"].astype(str)
    test.loc[7, "x1"] = "n/a (sensor)"


def _text_time(train: pd.DataFrame, test: pd.DataFrame) -> None:
    train["day"] = "2020-01-01"
    test["day"] = "2020-02-01"
    test.loc[3, "day"] = "next tuesday"


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            _text_number,
            r"column 'x1' holds numbers in train but non-numeric"
            r" values in test \(.*b\.parquet\) \(1 rows, first at row 7\)",
        ),
        (
            _text_time,
            r"time column 'day' in test .* 1 value\(s\) cannot be read"
            r" as dates \(first at row 3\)",
        ),
    ],
)
def test_values_no_kind_can_compare_are_refused(
    tmp_path: Path, spoil: Callable[[pd.DataFrame, pd.DataFrame], None], message: str
) -> None:
    train, test = make_frame(100, 1, 0, 0.0), make_frame(50, 2, 0, 0.0)
    spoil(train, test)
    paths = (
        write_parquet(train, tmp_path / "a.parquet"),
        write_parquet(test, tmp_path / "b.parquet"),
    )
    with pytest.raises(InputError, match=message):
        scan_large(*paths, CONFIG, LIMITS)


def test_reserved_column_names_are_refused(files: tuple[Path, Path], tmp_path: Path) -> None:
    train = make_frame(100, 1, 0, 0.0)
    path = write_parquet(train.rename(columns={"x1": "file_row_number"}), tmp_path / "r.parquet")
    with pytest.raises(InputError, match="'file_row_number' is reserved"):
        scan_large(path, files[1], CONFIG, LIMITS)


def test_scratch_directory_is_removed_when_duckdb_fails_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    from governance.large.engine import Engine

    def refuse(*args: object, **kwargs: object) -> None:
        raise duckdb.IOException("IO Error: cannot open the database file")

    monkeypatch.setattr(duckdb, "connect", refuse)
    with pytest.raises(duckdb.IOException), Engine(ScanLimits(temp_directory=tmp_path)):
        pass
    assert not list(tmp_path.iterdir())


def test_limits_are_validated_on_construction() -> None:
    assert parse_size("256MB") == 256_000_000
    assert parse_size("1.5 GiB") == 3 * 2**29
    assert ScanLimits(memory_limit=" 64 MB ").memory_limit == "64MB"
    for bad in ("lots", "64", "64XB", "1MB"):
        with pytest.raises(ValidationError):
            ScanLimits(memory_limit=bad)
    with pytest.raises(ValidationError):
        ScanLimits(threads=0)
    with pytest.raises(ValidationError):
        ScanLimits(gx_chunk_rows=0)


def test_whitespace_is_pythons() -> None:
    assert set(PY_WHITESPACE) == {chr(i) for i in range(0x110000) if chr(i).isspace()}


# --- the checks that run on a bounded sample -----------------------------------------------


def test_sampled_checks_find_leakage_and_pii_and_name_file_rows(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_leakage_model import halves, spending

    frame = spending(6000, 40)
    frame["contact"] = "none"
    with_email = np.arange(0, 6000, 7)
    frame.loc[with_email, "contact"] = [f"user{i}@example.org" for i in with_email]
    train, test = halves(frame)
    paths = (
        write_parquet(train, tmp_path / "train.parquet"),
        write_parquet(test, tmp_path / "test.parquet"),
    )
    limits = ScanLimits(memory_limit="128MB", threads=1, sample_rows=1500)

    found = scan_sampled(*paths, CheckConfig(label="label"), limits)

    leak = only(found, FindingType.target_leakage)
    assert leak.columns == ("clinic", "pharmacy", "hospital") and leak.severity is Severity.critical
    assert "random sample of 1,500 train and 1,200 test rows" in leak.detail
    pii = only(found, FindingType.pii)
    assert pii.columns == ("contact",) and pii.train_rows and pii.test_rows
    # Positions are rows of the files, not of the sample: each holds an address.
    assert train.loc[list(pii.train_rows), "contact"].str.contains("@").all()
    assert test.loc[list(pii.test_rows), "contact"].str.contains("@").all()
    assert max(pii.train_rows) > 1500  # beyond the sample's own numbering
    assert set(SAMPLED) | set(SUPPORTED) | set(SKIPPED) == set(FindingType)
