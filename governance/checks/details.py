"""What each finding says, in one place for the in-memory and the out-of-core scans.

Both scans must report the same finding in the same words (the tests compare
them), so each detail is written here once, from the counts a detector found.
"""

from __future__ import annotations

import pandas as pd

from governance.checks.registry import share


def exact_duplicate(count: int, n_test: int, chance_note: str) -> str:
    return (
        f"{share(count, n_test)} test rows equal a train row after normalisation"
        f"{chance_note} so test scores partly measure memorisation."
    )


def duplicate_rows(count: int, n_rows: int, split: str) -> str:
    return (
        f"{share(count, n_rows)} {split} rows repeat an earlier"
        f" {split} row, so they weigh more than the data supports."
    )


def conflicting_labels_within(count: int, n_rows: int, split: str) -> str:
    return (
        f"{share(count, n_rows)} {split} rows share every feature"
        f" value with a {split} row labelled differently, which caps"
        " accuracy and often means a labelling error."
    )


def conflicting_labels_across(count: int, n_test: int) -> str:
    return (
        f"{share(count, n_test)} test rows share every feature value"
        " with train rows labelled differently, so they score label noise, not skill."
    )


def group_leakage(column: str, shared: int, train_rows: int, test_rows: int, n_test: int) -> str:
    return (
        f"{shared:,} {column} values are in both splits ({train_rows:,} train"
        f" rows, {share(test_rows, n_test)} test rows), so the test set does"
        f" not measure performance on unseen {column} values."
    )


def temporal_leakage(column: str, count: int, n_train_timed: int, earliest_test: str) -> str:
    return (
        f"{share(count, n_train_timed)} train rows are later than the earliest"
        f" test row ({column} {earliest_test}), so the model learns from"
        " the future it is then tested on."
    )


def time_text(value: float | int, instant: bool) -> str:
    """A time as findings show it: an instant (UTC nanoseconds) as a timestamp, else a number."""
    if instant:
        return str(pd.Timestamp(int(value), tz="UTC"))
    return f"{float(value):g}"
