"""Feature encoding by the declared schema only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.errors import TrainingInputError
from training.features import ColumnRole, FeatureSpec, encode_table, feature_names

SCHEMA = (
    FeatureSpec("person", ColumnRole.IDENTIFIER, minimum=1, maximum=999),
    FeatureSpec("year", ColumnRole.TIME, minimum=1, maximum=5),
    FeatureSpec("age", ColumnRole.SENSITIVE, minimum=0, maximum=100),
    FeatureSpec("income", minimum=0.0, maximum=1000.0, nullable=True),
    FeatureSpec("plan", categories=("a", "b", "c"), nullable=True),
    FeatureSpec("visits", minimum=0, maximum=10),
    FeatureSpec("spend", ColumnRole.EXCLUDED, minimum=0, maximum=1e6),
    FeatureSpec("outcome", ColumnRole.LABEL, categories=(0, 1)),
)


def frame(**changes: list[object]) -> pd.DataFrame:
    data = {
        "person": [1, 2, 3, 4],
        "year": [1, 2, 3, 4],
        "age": [20.0, 40.0, 60.0, 80.0],
        "income": [0.0, 500.0, np.nan, 2000.0],
        "plan": ["a", "c", None, "b"],
        "visits": [0, 5, 10, 20],
        "spend": [10.0, 20.0, 30.0, np.inf],
        "outcome": [0, 1, 1, 0],
    }
    return pd.DataFrame({**data, **changes})


def test_layout_comes_from_the_schema_feature_columns_only() -> None:
    assert feature_names(SCHEMA) == (
        "income",
        "income__missing",
        "plan=a",
        "plan=b",
        "plan=c",
        "plan__missing",
        "visits",
    )
    assert feature_names(SCHEMA, include_sensitive=True)[0] == "age"


def test_numbers_scale_by_declared_bounds_and_categories_one_hot() -> None:
    table = encode_table(frame(), SCHEMA, "outcome")
    # income / 1000 clipped to [0, 1] (2000 -> 1), missing -> 0 + flag; visits / 10 clipped.
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 1.0, 0.0, 0.5],
            [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0],
            [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(table.features, expected)
    assert table.features.dtype == torch.float32
    assert table.labels.tolist() == [0, 1, 1, 0] and table.labels.dtype == torch.int64
    assert table.width == 7 and len(table) == 4


def test_encoding_a_row_does_not_depend_on_the_other_rows() -> None:
    whole = encode_table(frame(), SCHEMA, "outcome").features
    alone = encode_table(frame().iloc[[1]], SCHEMA, "outcome").features
    assert torch.equal(alone[0], whole[1])


def test_sensitive_columns_only_on_request() -> None:
    table = encode_table(frame(), SCHEMA, "outcome", include_sensitive=True)
    assert table.feature_names[0] == "age"
    assert torch.allclose(table.features[:, 0], torch.tensor([0.2, 0.4, 0.6, 0.8]))


def test_declared_label_categories_map_in_order_and_numbers_compare_by_value() -> None:
    schema = (*SCHEMA[:-1], FeatureSpec("outcome", ColumnRole.LABEL, categories=("no", "yes")))
    table = encode_table(frame(outcome=["yes", "no", "no", "yes"]), schema, "outcome")
    assert table.labels.tolist() == [1, 0, 0, 1]
    # A boolean or float column matches declared 0/1 categories.
    assert encode_table(
        frame(outcome=[True, False, True, True]), SCHEMA, "outcome"
    ).labels.tolist() == [1, 0, 1, 1]
    assert encode_table(frame(outcome=[1.0, 0.0, 0.0, 1.0]), SCHEMA, "outcome").labels.tolist() == [
        1,
        0,
        0,
        1,
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            [0, 1, 2, 0],
            r"'outcome' must be binary with values \[0, 1\]; other values in 1 rows"
            r" \(e.g. rows \[2\]\)",
        ),
        ([0, 1, np.nan, 0], r"label column 'outcome' has missing or infinite values in 1 rows"),
        ([0, 1, np.inf, 0], r"label column 'outcome' has missing or infinite values in 1 rows"),
    ],
)
def test_a_label_that_is_not_binary_is_refused_naming_the_column(
    values: list[object], message: str
) -> None:
    with pytest.raises(TrainingInputError, match=message):
        encode_table(frame(outcome=values), SCHEMA, "outcome")


def test_undeclared_binary_label_must_be_zero_or_one() -> None:
    schema = (*SCHEMA[:-1], FeatureSpec("outcome", ColumnRole.LABEL))
    assert encode_table(frame(), schema, "outcome").labels.tolist() == [0, 1, 1, 0]
    with pytest.raises(TrainingInputError, match="'outcome' must be binary"):
        encode_table(frame(outcome=[0, 1, -1, 0]), schema, "outcome")


def test_more_than_two_label_categories_are_refused() -> None:
    schema = (*SCHEMA[:-1], FeatureSpec("outcome", ColumnRole.LABEL, categories=(0, 1, 2)))
    with pytest.raises(TrainingInputError, match="declares 3 categories"):
        encode_table(frame(), schema, "outcome")


def test_errors_name_the_file_column_and_rows_but_never_values() -> None:
    with pytest.raises(TrainingInputError) as error:
        encode_table(
            frame(plan=["a", "zzz-secret", "b", "c"]), SCHEMA, "outcome", source="train.csv"
        )
    message = str(error.value)
    assert message.startswith("train.csv: column 'plan' has values outside its declared categories")
    assert "rows [1]" in message and "zzz-secret" not in message


def test_missing_values_in_a_column_not_declared_nullable_are_refused() -> None:
    with pytest.raises(
        TrainingInputError, match=r"'visits' has missing values in 1 rows \(e.g. rows \[3\]\)"
    ):
        encode_table(frame(visits=[0, 1, 2, None]), SCHEMA, "outcome")


def test_numeric_column_problems_are_refused() -> None:
    with pytest.raises(TrainingInputError, match="'visits' has non-numeric values"):
        encode_table(frame(visits=[0, 1, "two", 3]), SCHEMA, "outcome")
    with pytest.raises(TrainingInputError, match="'visits' has infinite values"):
        encode_table(frame(visits=[0, 1, np.inf, 3]), SCHEMA, "outcome")


def test_schema_problems_are_gathered() -> None:
    schema = (
        FeatureSpec("a"),
        FeatureSpec("b", minimum=3, maximum=3),
        FeatureSpec("a", minimum=0, maximum=1),
        FeatureSpec("outcome", ColumnRole.LABEL),
    )
    with pytest.raises(TrainingInputError) as error:
        encode_table(frame(a=[1, 2, 3, 4], b=[3, 3, 3, 3]), schema, "outcome")
    message = str(error.value)
    assert "declared more than once: ['a']" in message
    assert "'a' needs a declared minimum and maximum" in message
    assert "'b' declares an empty range" in message


def test_missing_columns_and_unknown_label_are_refused() -> None:
    with pytest.raises(TrainingInputError, match=r"missing columns \['visits'\]"):
        encode_table(frame().drop(columns="visits"), SCHEMA, "outcome")
    with pytest.raises(TrainingInputError, match="label column 'target' is not in the schema"):
        encode_table(frame(), SCHEMA, "target")


def test_spec_validation() -> None:
    with pytest.raises(TrainingInputError, match="unknown role 'secret'"):
        FeatureSpec("x", role="secret")
    with pytest.raises(TrainingInputError, match="categories must be distinct"):
        FeatureSpec("x", categories=(1, 1.0))
    assert FeatureSpec("x", role="sensitive").role is ColumnRole.SENSITIVE
