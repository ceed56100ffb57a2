"""Model-based checks and the findings they feed: planted multi-column leaks, proxies,
duplicates a leaky column would hide, and the value-space chance rule.

Each planted case also has its clean counterpart, so a check that fires on
everything fails here as surely as one that fires on nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from governance.checks import CheckConfig, CheckThresholds, Finding, FindingType, Severity, scan
from governance.checks.duplicates import collision_probability, value_space_chance
from governance.checks.rules import find_rule

N = 3000


def of_type(findings: list[Finding], kind: FindingType) -> list[Finding]:
    return [f for f in findings if f.type is kind]


def spending(n: int, seed: int) -> pd.DataFrame:
    """Three zero-inflated spending columns; the label is 1 when any of them is positive."""
    rng = np.random.default_rng(seed)
    parts = {
        name: np.where(rng.random(n) < 0.3, rng.gamma(2.0, 50.0, size=n).round(2), 0.0)
        for name in ("clinic", "pharmacy", "hospital")
    }
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, size=n),
            "visits_planned": rng.poisson(2, size=n),
            **parts,
            "score": rng.normal(size=n).round(4),
            "region": rng.choice(["north", "south", "east", "west"], size=n),
        }
    )
    frame["label"] = (frame["clinic"] + frame["pharmacy"] + frame["hospital"] > 0).astype(int)
    return frame


def halves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = len(frame) * 4 // 5
    return frame[:cut].reset_index(drop=True), frame[cut:].reset_index(drop=True)


def test_label_spread_over_three_columns_is_named_with_its_rule() -> None:
    train, test = halves(spending(N, 1))

    findings = scan(train, test, config=CheckConfig(label="label"))
    leaks = of_type(findings, FindingType.target_leakage)

    # No one column comes near: each alone scores about 0.73.
    assert [(f.columns, f.severity) for f in leaks] == [
        (("clinic", "pharmacy", "hospital"), Severity.critical)
    ]
    assert leaks[0].count == 3
    assert leaks[0].rule == "label = (clinic + pharmacy + hospital > 0)"
    assert "clinic, pharmacy and hospital together predict label" in leaks[0].detail


def test_a_plausible_model_is_not_leakage() -> None:
    # The same data with the label drawn from the spending plus real noise.
    frame = spending(N, 2)
    rng = np.random.default_rng(3)
    signal = frame["clinic"] + frame["pharmacy"] - 40 + rng.normal(scale=60, size=N)
    frame["label"] = (signal > 0).astype(int)
    train, test = halves(frame)
    assert not of_type(
        scan(train, test, config=CheckConfig(label="label")), FindingType.target_leakage
    )


def test_a_column_leaking_alone_is_left_out_of_the_model_so_a_second_leak_shows() -> None:
    frame = spending(N, 4)
    rng = np.random.default_rng(5)
    frame["billing_code"] = frame["label"] * 7 + rng.integers(0, 2, size=N)  # leaks alone
    train, test = halves(frame)

    findings = scan(train, test, config=CheckConfig(label="label"))
    leaks = of_type(findings, FindingType.target_leakage)

    assert {f.columns for f in leaks} == {("billing_code",), ("clinic", "pharmacy", "hospital")}
    assert all(f.severity is Severity.critical for f in leaks)


def test_rule_states_thresholds_and_refuses_poor_agreement() -> None:
    rng = np.random.default_rng(6)
    values = {"a": rng.normal(size=500), "b": rng.normal(size=500)}
    y = (values["a"] + values["b"] > 0.5).astype(int)
    rule = find_rule("y", "1", y, ["a", "b"], values, 0.99)
    assert rule is not None and rule.agree == 500
    assert rule.text.startswith("y = (a + b > 0.4") or rule.text.startswith("y = (a + b > 0.5")
    noisy = np.where(rng.random(500) < 0.2, 1 - y, y)
    assert find_rule("y", "1", noisy, ["a", "b"], values, 0.99) is None
    everyone = (np.minimum(values["a"], values["b"]) > 0).astype(int)
    both = find_rule("y", "'yes'", everyone, ["a", "b"], values, 0.99)
    assert both is not None and both.text == "y is 'yes' exactly when (each of a, b > 0)"


def people(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(0, 80, size=n)
    sex = rng.integers(0, 2, size=n)
    income = np.where(age < 18, 0.0, rng.lognormal(10, 0.6, size=n)).round(2)
    frame = pd.DataFrame(
        {
            "age": age,
            "sex": sex,
            "income": income,
            "minor": (age < 18).astype(int),
            "minor_girl": ((age < 18) & (sex == 1)).astype(int),
            "log_income": np.log1p(income).round(6),
            # Related to age, but far from a stand-in for it.
            "checkups": rng.poisson(1 + age / 40),
            "height": (150 + 15 * sex + rng.normal(scale=12, size=n)).round(1),
            "score": rng.normal(size=n).round(4),
        }
    )
    frame["label"] = (frame["score"] + rng.normal(size=n) > 0).astype(int)
    return frame


SENSITIVE = CheckConfig(label="label", sensitive_columns=("age", "sex", "income"))


def test_proxies_of_sensitive_attributes_name_both_sides() -> None:
    train, test = halves(people(N, 7))

    findings = scan(train, test, config=SENSITIVE)

    proxies = {
        (f.columns, frozenset(f.sensitive_columns), f.severity)
        for f in of_type(findings, FindingType.proxy)
    }
    assert proxies == {
        (("minor",), frozenset({"age"}), Severity.critical),
        (("minor_girl",), frozenset({"age", "sex"}), Severity.critical),
        (("log_income",), frozenset({"income"}), Severity.critical),
    }
    assert not [f for f in findings if f.type is not FindingType.proxy]


def test_no_proxy_without_stand_ins() -> None:
    train, test = halves(people(N, 8).drop(columns=["minor", "minor_girl", "log_income"]))
    assert scan(train, test, config=SENSITIVE) == []


def test_conflicts_and_copies_are_not_hidden_by_a_column_encoding_the_label() -> None:
    frame = spending(N, 9).drop(columns=["clinic", "pharmacy", "hospital"])
    rng = np.random.default_rng(10)
    frame["label"] = (frame["score"] + rng.normal(size=N) > 0).astype(int)
    train, test = halves(frame)
    sources = np.arange(10, 30)
    copies = np.arange(100, 120)
    test.loc[copies, train.columns] = train.loc[sources, train.columns].to_numpy()
    test.loc[copies[:10], "label"] = 1 - test.loc[copies[:10], "label"]  # conflicts
    for split in (train, test):
        # Recorded after the outcome: the label plus noise, so no two rows agree on it.
        split["refund"] = split["label"] * 100 + rng.normal(scale=5, size=len(split)).round(3)

    findings = scan(train, test, config=CheckConfig(label="label"))

    assert [f.columns for f in of_type(findings, FindingType.target_leakage)] == [("refund",)]
    conflict = of_type(findings, FindingType.conflicting_labels)
    assert [(f.test_rows, f.train_rows) for f in conflict] == [
        (tuple(copies[:10]), tuple(sources[:10]))
    ]
    assert "refund" not in conflict[0].columns and "without refund" in conflict[0].detail
    duplicate = of_type(findings, FindingType.exact_duplicate)
    assert [(f.test_rows, f.severity) for f in duplicate] == [
        (tuple(copies[10:]), Severity.critical)
    ]


def test_copies_in_continuous_data_stay_critical_when_train_repeats_itself() -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(rng.normal(size=(N, 3)).round(6), columns=["a", "b", "c"])
    frame["label"] = (frame["a"] + rng.normal(size=N) > 0).astype(int)
    train, test = halves(frame)
    repeated = rng.choice(len(train), size=len(train) // 3, replace=False)
    train.loc[repeated[: len(repeated) // 2]] = train.loc[repeated[len(repeated) // 2 :]].to_numpy()
    test.loc[:14] = train.loc[100:114].to_numpy()  # 2.5% of test copies train rows

    findings = scan(train, test, config=CheckConfig(label="label"))

    duplicate = of_type(findings, FindingType.exact_duplicate)
    assert [(f.count, f.severity) for f in duplicate] == [(15, Severity.critical)]
    assert of_type(findings, FindingType.duplicate_rows)  # the repeats are reported as such


def test_value_space_chance_against_a_direct_count() -> None:
    rng = np.random.default_rng(12)
    train = rng.integers(0, 4, size=(20_000, 3))
    new = rng.integers(0, 4, size=(2000, 3))
    seen = {tuple(r) for r in train}
    observed = np.mean([tuple(r) in seen for r in new])
    collisions = [collision_probability(train[:, i]) for i in range(3)]
    assert collisions == pytest.approx([0.25] * 3, abs=0.01)
    assert value_space_chance(collisions, len(train)) == pytest.approx(observed, abs=0.02)
    # 64 rows of a million-row space: chance of a match is about n / 1e6.
    assert value_space_chance([1e-3, 1e-3], 500) == pytest.approx(500e-6, rel=0.01)
    assert value_space_chance([0.0, 0.5], 10**6) == 0.0


def test_thresholds_are_typed_and_unknown_keys_refused() -> None:
    assert CheckThresholds(proxy_warning=0.9).model_dump(exclude_unset=True) == {
        "proxy_warning": 0.9
    }
    with pytest.raises(ValidationError, match="target_leakage_critcal"):
        CheckThresholds(target_leakage_critcal=0.9)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="model_max_rows"):
        CheckThresholds(model_max_rows=10)
    with pytest.raises(ValidationError, match="label"):
        CheckThresholds(label="y")  # type: ignore[call-arg]  # roles are not thresholds
    with pytest.raises(ValidationError, match="proxy_warning must not exceed proxy_critical"):
        CheckConfig(proxy_warning=0.99, proxy_critical=0.95)
