"""Leakage and contamination checks: planted problems of every type, clean splits, RAND HIE.

Each planted-problem test asserts recall and precision at once: the rows a
finding lists must be exactly the planted rows.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from governance.checks import CheckConfig, Finding, FindingType, Severity, scan
from governance.checks.registry import DETECTORS
from governance.checks.scan import alignment
from governance.errors import InputError
from governance.provenance import ColumnRole, Provenance, SourceDeclaration

N_TRAIN, N_TEST = 4000, 1000
WORDS = np.array([f"w{i:04d}" for i in range(5000)])
CONFIG = CheckConfig(label="label", id_column="person", time_column="visit")


def make_frame(n: int, seed: int, first_person: int, first_day: str) -> pd.DataFrame:
    """Realistic-looking clean data: 3 rows per person, one row a day, a noisy label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).round(3)
    zipf = 1.0 / (np.arange(len(WORDS)) + 10.0)
    words = rng.choice(WORDS, size=(n, 14), p=zipf / zipf.sum())
    return pd.DataFrame(
        {
            "person": first_person + np.arange(n) // 3,
            "visit": pd.date_range(first_day, periods=n, freq="D"),
            "x1": x[:, 0],
            "x2": x[:, 1],
            "x3": x[:, 2],
            "amount": np.exp(x[:, 3]).round(2),
            "count": rng.poisson(3, size=n),
            "colour": rng.choice(["red", "green", "blue", "cyan"], size=n),
            "city": rng.choice([f"city {i}" for i in range(30)], size=n),
            "note": [" ".join(row) for row in words],
            "label": (x[:, 0] + x[:, 1] + rng.normal(size=n) > 0).astype(int),
        }
    )


@pytest.fixture
def train() -> pd.DataFrame:
    return make_frame(N_TRAIN, seed=1, first_person=0, first_day="2001-01-01")


@pytest.fixture
def test() -> pd.DataFrame:
    return make_frame(N_TEST, seed=2, first_person=100_000, first_day="2020-01-01")


def of_type(findings: list[Finding], kind: FindingType) -> list[Finding]:
    return [f for f in findings if f.type is kind]


def only(findings: list[Finding], kind: FindingType) -> Finding:
    found = of_type(findings, kind)
    assert len(found) == 1, found
    return found[0]


def planted(rng: np.random.Generator, pool: range, n: int) -> np.ndarray:
    return np.sort(rng.choice(np.array(pool), size=n, replace=False))


def copy_rows(
    target: pd.DataFrame, rows: np.ndarray, source: pd.DataFrame, from_rows: np.ndarray
) -> None:
    columns = [c for c in source.columns if c not in ("person", "visit")]
    target.loc[rows, columns] = source.loc[from_rows, columns].to_numpy()


def test_every_finding_type_has_a_detector() -> None:
    assert set(DETECTORS) == set(FindingType)
    assert [t.value for t in FindingType] == [
        "exact_duplicate",
        "near_duplicate",
        "group_leakage",
        "temporal_leakage",
        "target_leakage",
        "proxy",
        "reference_contamination",
        "duplicate_rows",
        "conflicting_labels",
        "pii",
    ]


def test_clean_split_has_no_finding(train: pd.DataFrame, test: pd.DataFrame) -> None:
    assert scan(train, test, {"bench": make_frame(300, 3, 0, "2030-01-01")}, config=CONFIG) == []


def test_exact_duplicates_found_after_normalisation(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    rng = np.random.default_rng(10)
    rows, sources = planted(rng, range(N_TEST), 50), planted(rng, range(N_TRAIN), 50)
    copy_rows(test, rows, train, sources)
    # Same values, other spellings: case, whitespace, float noise below the rounding.
    test.loc[rows[:25], "colour"] = "  " + test.loc[rows[:25], "colour"].str.upper() + " "
    test.loc[rows[25:], "note"] = test.loc[rows[25:], "note"].str.replace(" ", "   ")
    test["x1"] = test["x1"] + 1e-9
    test["count"] = test["count"].astype(float)
    test.index = test.index * 7 + 3  # rows are reported by position, not by index label

    findings = scan(train, test, config=CONFIG)

    duplicate = only(findings, FindingType.exact_duplicate)
    assert duplicate.severity is Severity.critical
    assert duplicate.count == 50
    assert duplicate.test_rows == tuple(rows)
    assert duplicate.train_rows == tuple(sources)
    assert {"x1", "colour", "note", "label"} <= set(duplicate.columns)
    assert not {"person", "visit"} & set(duplicate.columns)
    assert not of_type(findings, FindingType.near_duplicate)


def test_duplicates_expected_by_chance_are_not_critical() -> None:
    # Three binary features and a binary label admit 16 distinct rows: overlap is certain.
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.integers(0, 2, size=(2500, 4)), columns=["a", "b", "c", "label"])
    findings = scan(frame[:2000], frame[2000:].reset_index(drop=True), config=CheckConfig())
    assert only(findings, FindingType.exact_duplicate).severity is Severity.warning
    assert not [f for f in findings if f.severity is Severity.critical]


def test_numeric_near_duplicates_found_and_clean_rows_not(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    rng = np.random.default_rng(12)
    rows, sources = planted(rng, range(N_TEST), 40), planted(rng, range(N_TRAIN), 40)
    copy_rows(test, rows, train, sources)
    for column in ("x1", "x2", "x3", "amount"):
        jitter = rng.normal(scale=1e-4 * train[column].std(), size=len(rows))
        test.loc[rows, column] = test.loc[rows, column] + jitter

    findings = scan(train, test, config=CONFIG)

    numeric = [f for f in of_type(findings, FindingType.near_duplicate) if "x1" in f.columns]
    assert len(numeric) == 1
    assert numeric[0].test_rows == tuple(rows)
    assert numeric[0].train_rows == tuple(sources)
    assert numeric[0].severity is Severity.critical  # 4% of test > 1%
    assert not of_type(findings, FindingType.exact_duplicate)


def test_text_near_duplicates_found_by_minhash(train: pd.DataFrame, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(13)
    rows, sources = planted(rng, range(N_TEST), 30), planted(rng, range(N_TRAIN), 30)
    for row, source in zip(rows, sources, strict=True):
        words = train.at[source, "note"].split()
        words[rng.integers(len(words))] = "replaced"
        test.at[row, "note"] = " ".join(words).upper() + "!"

    findings = scan(train, test, config=CONFIG)

    text = only(findings, FindingType.near_duplicate)
    assert text.columns == ("note",)
    assert text.test_rows == tuple(rows)
    assert text.train_rows == tuple(sources)
    assert text.severity is Severity.critical  # 3% of test > 1%


def test_text_near_duplicates_over_two_text_columns(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    for frame in (train, test):
        frame["summary"] = frame["note"].str.split().str[::-1].str.join(" ").str.replace("w", "v")
    rows, sources = np.array([3, 30, 300]), np.array([4, 40, 400])
    copy_rows(test, rows, train, sources)
    test.loc[rows, "note"] = test.loc[rows, "note"].str.replace(" ", " extra ", n=1)
    test.loc[rows, "x1"] = 99.0  # not a numeric near-duplicate, not identical

    text = only(scan(train, test, config=CONFIG), FindingType.near_duplicate)

    assert text.columns == ("note", "summary")
    assert (text.test_rows, text.train_rows) == (tuple(rows), tuple(sources))


def test_group_leakage_lists_rows_on_both_sides(train: pd.DataFrame, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(14)
    rows = planted(rng, range(N_TEST), 20)
    people = rng.choice(train["person"].unique(), size=20, replace=False)
    test.loc[rows, "person"] = people

    leak = only(scan(train, test, config=CONFIG), FindingType.group_leakage)

    assert leak.severity is Severity.critical
    assert leak.count == 20
    assert leak.columns == ("person",)
    assert leak.test_rows == tuple(rows)
    assert leak.train_rows == tuple(np.flatnonzero(train["person"].isin(people)))


@pytest.mark.parametrize(("n_late", "severity"), [(25, Severity.warning), (200, Severity.critical)])
def test_temporal_leakage(
    train: pd.DataFrame, test: pd.DataFrame, n_late: int, severity: Severity
) -> None:
    rng = np.random.default_rng(15)
    rows = planted(rng, range(N_TRAIN), n_late)
    train.loc[rows, "visit"] = pd.Timestamp("2020-06-01")

    leak = only(scan(train, test, config=CONFIG), FindingType.temporal_leakage)

    assert leak.severity is severity
    assert leak.count == n_late
    assert leak.train_rows == tuple(rows)
    assert leak.test_rows == tuple(range(int((test["visit"] < "2020-06-01").sum())))


def test_no_temporal_leakage_without_a_time_column(train: pd.DataFrame, test: pd.DataFrame) -> None:
    test["visit"] = train["visit"][:N_TEST]
    config = CheckConfig(label="label", id_column="person", exclude_columns=("visit",))
    assert not of_type(scan(train, test, config=config), FindingType.temporal_leakage)


def test_target_leakage_binary_label(train: pd.DataFrame, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(16)
    for frame in (train, test):
        label = frame["label"].to_numpy()
        frame["refund"] = label * 50 + rng.normal(scale=5, size=len(frame))
        frame["lab_result"] = np.where(label == 1, np.nan, rng.normal(size=len(frame)))
        flip = rng.random(len(frame)) < 0.003
        frame["status"] = np.where(label ^ flip, "paid", "open")
        frame["ticket"] = [f"T{len(frame)}-{i}" for i in range(len(frame))]  # identifier-like

    leaks = of_type(scan(train, test, config=CONFIG), FindingType.target_leakage)

    assert {f.columns[0] for f in leaks} == {"refund", "lab_result", "status"}
    assert all(f.severity is Severity.critical and f.count == 1 for f in leaks)
    missing = next(f for f in leaks if f.columns == ("lab_result",))
    assert "missing" in missing.detail


def test_target_leakage_multiclass_and_numeric_labels(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    rng = np.random.default_rng(17)
    for frame in (train, test):
        frame["grade"] = rng.choice(["a", "b", "c", "d"], size=len(frame))
        frame["grade_code"] = frame["grade"].map({"a": 3, "b": 1, "c": 4, "d": 2})  # not monotone
        frame["cost"] = frame["x1"] * 2 + rng.normal(size=len(frame))
        frame["cost_cents"] = (frame["cost"] * 100).round()
    others = ("label", "cost", "cost_cents", "grade", "grade_code")

    multiclass = CheckConfig(label="grade", id_column="person", exclude_columns=others[:3])
    leaks = of_type(scan(train, test, config=multiclass), FindingType.target_leakage)
    assert [f.columns for f in leaks] == [("grade_code",)]

    regression = CheckConfig(label="cost", id_column="person", exclude_columns=("label", "grade"))
    leaks = of_type(scan(train, test, config=regression), FindingType.target_leakage)
    assert [f.columns for f in leaks] == [("cost_cents",)]


def test_reference_contamination_exact_and_near(train: pd.DataFrame) -> None:
    rng = np.random.default_rng(18)
    reference = make_frame(200, seed=4, first_person=0, first_day="1990-01-01")
    reference = reference.drop(columns=["person", "visit", "label"])
    exact, exact_sources = np.arange(0, 30), planted(rng, range(N_TRAIN), 30)
    near, near_sources = np.arange(50, 70), planted(rng, range(N_TRAIN), 20)
    features = list(reference.columns)
    reference.loc[exact, features] = train.loc[exact_sources, features].to_numpy()
    reference.loc[exact, "city"] = reference.loc[exact, "city"].str.title()
    reference.loc[near, features] = train.loc[near_sources, features].to_numpy()
    reference.loc[near, "x2"] = reference.loc[near, "x2"] + 1e-4

    test = make_frame(N_TEST, seed=2, first_person=100_000, first_day="2020-01-01")
    findings = of_type(
        scan(train, test, {"benchmark": reference}, config=CONFIG),
        FindingType.reference_contamination,
    )

    exact_found, *near_found = findings
    assert exact_found.severity is Severity.critical
    assert exact_found.reference_rows == tuple(exact)
    assert exact_found.train_rows == tuple(exact_sources)
    # The near copies are found twice: numbers within tolerance, and (copied) text.
    assert sorted("x2" in f.columns for f in near_found) == [False, True]
    for found in near_found:
        assert found.severity is Severity.warning
        assert found.reference_rows == tuple(near)
        assert found.train_rows == tuple(near_sources)
    assert all(f.reference == "benchmark" and not f.test_rows for f in findings)


def test_reference_with_numbers_read_as_text_still_matches(train: pd.DataFrame) -> None:
    reference = train.loc[
        [5, 7, 9], ["x1", "x2", "x3", "amount", "count", "colour", "city", "note"]
    ]
    reference = reference.astype(str).reset_index(drop=True)  # e.g. read with dtype=str
    reference.loc[0, "x1"] = "1e9"
    test = make_frame(N_TEST, seed=2, first_person=100_000, first_day="2020-01-01")
    exact, text = of_type(
        scan(train, test, {"ref": reference}, config=CONFIG), FindingType.reference_contamination
    )
    assert (exact.severity, exact.reference_rows, exact.train_rows) == (
        Severity.critical,
        (1, 2),
        (7, 9),
    )
    # Row 0 differs in x1 but keeps its text, so only the text check finds it.
    assert (text.columns, text.reference_rows, text.train_rows) == (("note",), (0,), (5,))


def test_duplicate_rows_within_each_split(train: pd.DataFrame, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(19)
    rows, sources = planted(rng, range(1000, N_TRAIN), 50), planted(rng, range(1000), 50)
    copy_rows(train, rows, train, sources)
    copy_rows(test, np.array([900, 901]), test, np.array([5, 6]))

    found = of_type(scan(train, test, config=CONFIG), FindingType.duplicate_rows)

    assert [(f.count, f.train_rows, f.test_rows) for f in found] == [
        (50, tuple(rows), ()),
        (2, (), (900, 901)),
    ]
    assert all(f.severity is Severity.warning for f in found)


def test_conflicting_labels_within_and_across(train: pd.DataFrame, test: pd.DataFrame) -> None:
    rng = np.random.default_rng(20)
    rows, sources = planted(rng, range(2000, N_TRAIN), 20), planted(rng, range(2000), 20)
    copy_rows(train, rows, train, sources)
    train.loc[rows, "label"] = 1 - train.loc[rows, "label"]
    test_rows, test_sources = planted(rng, range(N_TEST), 15), planted(rng, range(2000), 15)
    copy_rows(test, test_rows, train, test_sources)
    test.loc[test_rows, "label"] = 1 - test.loc[test_rows, "label"]

    findings = scan(train, test, config=CONFIG)
    found = of_type(findings, FindingType.conflicting_labels)

    within = next(f for f in found if not f.test_rows)
    across = next(f for f in found if f.test_rows)
    assert len(found) == 2
    assert within.train_rows == tuple(sorted([*rows, *sources]))
    assert across.test_rows == tuple(test_rows)
    assert across.train_rows == tuple(test_sources)
    assert not of_type(findings, FindingType.exact_duplicate)
    assert not of_type(findings, FindingType.near_duplicate)
    assert not of_type(findings, FindingType.duplicate_rows)


def luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        digits = [int(d) for d in prefix + check][::-1]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)
        )
        if total % 10 == 0:
            return prefix + check
    raise AssertionError("unreachable")


def test_pii_found_only_where_undeclared_and_plausible(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    rng = np.random.default_rng(21)
    for frame in (train, test):
        n = len(frame)
        frame["contact"] = [
            f"({rng.integers(200, 999)}) 555-{rng.integers(1000, 9999)}" for _ in range(n)
        ]
        frame["ssn"] = [
            f"{rng.integers(100, 665)}-{rng.integers(10, 99)}-{rng.integers(1000, 9999)}"
            for _ in range(n)
        ]
        frame["card"] = [
            luhn_complete("4" + "".join(rng.choice(list("0123456789"), 14))) for _ in range(n)
        ]
        frame["order_no"] = ["".join(rng.choice(list("0123456789"), 16)) for _ in range(n)]
        frame["released"] = [
            f"2023-{rng.integers(1, 12):02d}-{rng.integers(1, 28):02d}" for _ in range(n)
        ]
        frame["email"] = [f"user{i}@example.org" for i in range(n)]
    emails = planted(rng, range(N_TRAIN), 40)
    train.loc[emails, "note"] = train.loc[emails, "note"] + " write to jane.doe@example.com"

    config = CheckConfig(
        label="label", id_column="person", time_column="visit", pii_columns=("email",)
    )
    findings = of_type(scan(train, test, config=config), FindingType.pii)

    by_column = {f.columns[0]: f for f in findings}
    assert set(by_column) == {"contact", "ssn", "card", "note"}
    for column in ("contact", "ssn", "card"):
        assert by_column[column].severity is Severity.critical
        assert by_column[column].count == N_TRAIN + N_TEST
    note = by_column["note"]
    assert note.severity is Severity.warning
    assert note.train_rows == tuple(emails) and note.test_rows == ()
    assert "jane" not in note.model_dump_json()


def test_row_lists_are_capped_but_counts_are_not(train: pd.DataFrame, test: pd.DataFrame) -> None:
    test["person"] = train["person"][:N_TEST]
    config = CONFIG.model_copy(update={"max_rows_listed": 10})
    leak = only(scan(train, test, config=config), FindingType.group_leakage)
    assert leak.rows_truncated
    assert len(leak.test_rows) == 10 and leak.test_rows == tuple(range(10))
    assert leak.count == len(set(train["person"][:N_TEST]))


def test_findings_sorted_worst_first_and_serialisable(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    copy_rows(train, np.array([10, 11]), train, np.array([0, 1]))
    test.loc[:4, "person"] = train["person"][:5].to_numpy()
    findings = scan(train, test, config=CONFIG)
    assert [(f.severity, f.type) for f in findings] == [
        (Severity.critical, FindingType.group_leakage),
        (Severity.warning, FindingType.duplicate_rows),
    ]
    assert Finding.model_validate_json(findings[0].model_dump_json()) == findings[0]
    with pytest.raises(ValidationError):
        findings[0].count = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Finding.model_validate({**findings[0].model_dump(), "secret": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda tr, te, c: (tr, te.rename(columns=lambda n: n.upper()).assign(label=1), c),
            "id_column 'person' is not a column of test",
        ),
        (
            lambda tr, te, c: (
                tr,
                te.rename(columns=lambda n: n if n in ("person", "visit", "label") else n + "_"),
                c,
            ),
            "train and test share no feature column",
        ),
        (lambda tr, te, c: (tr, te, c.model_copy(update={"label": "y"})), "label 'y' is not"),
        (
            lambda tr, te, c: (tr.drop(columns="person"), te.drop(columns="person"), c),
            "id_column 'person' is not a column of train",
        ),
        (lambda tr, te, c: (tr, te.iloc[:0], c), "test has no rows"),
        (
            lambda tr, te, c: (tr.assign(visit="soon"), te, c),
            "time column 'visit' in train: cannot read as dates",
        ),
    ],
)
def test_bad_input_raises_one_line_input_error(
    train: pd.DataFrame, test: pd.DataFrame, change: Callable, message: str
) -> None:
    train, test, config = change(train, test, CONFIG)
    with pytest.raises(InputError, match=message) as raised:
        scan(train, test, config=config)
    assert "\n" not in str(raised.value)


def test_reference_and_test_compared_on_the_columns_they_share(
    train: pd.DataFrame, test: pd.DataFrame
) -> None:
    # A public benchmark rarely carries your identifier, dates or derived columns.
    reference = train.loc[[5, 7, 9], ["x1", "x2", "colour"]].reset_index(drop=True)
    test = test.drop(columns=["note"])

    findings = scan(train, test, {"bench": reference}, config=CONFIG)

    contamination = only(findings, FindingType.reference_contamination)
    assert contamination.severity is Severity.critical  # continuous values: no chance match
    assert contamination.columns == ("x1", "x2", "colour")
    assert (contamination.reference_rows, contamination.train_rows) == ((0, 1, 2), (5, 7, 9))
    assert [f.type for f in findings] == [FindingType.reference_contamination]
    assert alignment(train, test, {"bench": reference}, CONFIG) == {
        "test": ["note"],
        "reference 'bench'": ["x3", "amount", "count", "city"],
    }


def test_reference_sharing_no_feature_is_refused(train: pd.DataFrame, test: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="reference 'r' shares no feature column"):
        scan(train, test, {"r": pd.DataFrame({"other": [1, 2]})}, config=CONFIG)


def test_config_rejects_contradictions() -> None:
    with pytest.raises(ValidationError, match="must differ"):
        CheckConfig(label="a", id_column="a")
    with pytest.raises(ValidationError):
        CheckConfig(lable="a")  # type: ignore[call-arg]


# --- the default dataset: RAND Health Insurance Experiment, one row per person-year.


@pytest.fixture(scope="module")
def randhie() -> pd.DataFrame:
    path = importlib.resources.files("statsmodels") / "datasets/randhie/src/randhie.csv"
    with importlib.resources.as_file(path) as csv:
        frame = pd.read_csv(csv)
    assert frame.shape == (20190, 45)
    return frame


def split_rows(frame: pd.DataFrame, in_test: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame[~in_test].reset_index(drop=True), frame[in_test].reset_index(drop=True)


RAND = CheckConfig(label="binexp", id_column="zper")


def test_randhie_row_split_leaks_people_and_label(randhie: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    train, test = split_rows(randhie, rng.random(len(randhie)) < 0.2)

    findings = scan(train, test, config=RAND)

    group = only(findings, FindingType.group_leakage)
    assert group.severity is Severity.critical and group.columns == ("zper",)
    assert group.count > 2500  # most of the 5,912 people have rows on both sides
    leaking = {
        f.columns
        for f in of_type(findings, FindingType.target_leakage)
        if f.severity is Severity.critical
    }
    # meddol alone, its log alone, then (without those two) the four parts of meddol.
    assert leaking == {("meddol",), ("lnmeddol",), ("outpdol", "drugdol", "suppdol", "inpdol")}


@pytest.fixture(scope="module")
def randhie_groups(randhie: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    people = randhie["zper"].unique()
    train, test = split_rows(randhie, randhie["zper"].isin(rng.choice(people, len(people) // 5)))
    assert not set(train["zper"]) & set(test["zper"])
    return train, test


def declared_config(record: Provenance) -> CheckConfig:
    """The roles the pipeline's check stage reads from a provenance record."""
    return CheckConfig(
        label=record.column(ColumnRole.label),
        id_column=record.column(ColumnRole.identifier),
        exclude_columns=tuple(record.columns_with(ColumnRole.excluded)),
        sensitive_columns=tuple(record.columns_with(ColumnRole.sensitive)),
    )


@pytest.fixture(scope="module")
def randhie_record() -> Provenance:
    path = Path(__file__).parents[2] / "datasets/randhie.yaml"
    declared = SourceDeclaration.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    return declared.provenance("test")


@pytest.mark.slow
def test_randhie_old_declaration_leaks_the_label_through_four_columns_and_proxies(
    randhie_groups: tuple[pd.DataFrame, pd.DataFrame], randhie_record: Provenance
) -> None:
    # The declaration before the fix: only meddol and lnmeddol excluded.
    config = declared_config(randhie_record).model_copy(
        update={"exclude_columns": ("meddol", "lnmeddol")}
    )

    findings = scan(*randhie_groups, config=config)

    leaks = of_type(findings, FindingType.target_leakage)
    critical = [f for f in leaks if f.severity is Severity.critical]
    assert [f.columns for f in critical] == [("outpdol", "drugdol", "suppdol", "inpdol")]
    assert critical[0].rule == "binexp = (outpdol + drugdol + suppdol + inpdol > 0)"
    assert critical[0].count == 4
    # outpdol alone stays a warning: the single-column check cannot see this leak.
    assert [(f.columns, f.severity) for f in leaks if f not in critical] == [
        (("outpdol",), Severity.warning)
    ]
    proxies = {
        (f.columns, frozenset(f.sensitive_columns)) for f in of_type(findings, FindingType.proxy)
    }
    assert proxies == {
        (("linc",), frozenset({"income"})),
        (("child",), frozenset({"xage"})),
        (("fchild",), frozenset({"female", "xage"})),
    }


@pytest.mark.slow
def test_randhie_committed_declaration_is_clean(
    randhie_groups: tuple[pd.DataFrame, pd.DataFrame], randhie_record: Provenance
) -> None:
    config = declared_config(randhie_record)
    assert {"outpdol", "drugdol", "suppdol", "inpdol", "linc", "child", "fchild"} <= set(
        config.exclude_columns
    )
    assert all(c.reason for c in randhie_record.columns if c.role is ColumnRole.excluded)

    findings = scan(*randhie_groups, config=config)

    assert not [f for f in findings if f.severity is Severity.critical], findings
    assert not of_type(findings, FindingType.target_leakage)
    assert not of_type(findings, FindingType.proxy)
