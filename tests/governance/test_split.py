import numpy as np
import pandas as pd
import pytest

from governance.errors import InputError
from governance.split import SPLITS, Strategy, split_frame

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture
def panel() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(500), rng.integers(1, 6, size=500))
    starts = rng.integers(1, 8, size=500)
    years = np.concatenate(
        [np.arange(n) + s for n, s in zip(np.bincount(people), starts, strict=True)]
    )
    return pd.DataFrame({"person": people, "year": years, "x": rng.normal(size=len(people))})


def split(frame, strategy, seed=1):
    return split_frame(
        frame,
        strategy=strategy,
        fractions=FRACTIONS,
        seed=seed,
        group_column="person",
        time_column="year",
    )


def ids(result, name, column="person"):
    return set(result.frames[name][column])


def test_group_split_never_shares_a_person_and_keeps_every_row(panel) -> None:
    result = split(panel, Strategy.group)
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not ids(result, a) & ids(result, b)
    assert sum(len(f) for f in result.frames.values()) == len(panel)
    shares = [len(result.frames[n]) / len(panel) for n in SPLITS]
    assert shares == pytest.approx([0.6, 0.2, 0.2], abs=0.03)


def test_random_split_shares_people(panel) -> None:
    result = split(panel, Strategy.random)
    assert ids(result, "train") & ids(result, "test")


def test_same_seed_same_split_other_seed_other_split(panel) -> None:
    first, again, other = (split(panel, Strategy.group, seed) for seed in (1, 1, 2))
    assert all(first.frames[n].index.equals(again.frames[n].index) for n in SPLITS)
    assert not first.frames["test"].index.equals(other.frames["test"].index)


def test_time_split_orders_train_before_test(panel) -> None:
    result = split(panel, Strategy.time)
    assert result.frames["train"]["year"].max() <= result.frames["test"]["year"].min()


def test_group_time_split_drops_rows_that_would_leak(panel) -> None:
    result = split(panel, Strategy.group_time)
    assert result.dropped_rows > 0
    assert not ids(result, "train") & ids(result, "test")
    assert result.frames["train"]["year"].max() <= result.frames["test"]["year"].min()
    assert sum(len(f) for f in result.frames.values()) + result.dropped_rows == len(panel)


def test_strategy_needing_a_missing_column_is_refused(panel) -> None:
    with pytest.raises(InputError, match="declares no identifier column"):
        split_frame(
            panel,
            strategy=Strategy.group,
            fractions=FRACTIONS,
            seed=0,
            group_column=None,
            time_column=None,
        )


def test_too_small_for_three_splits() -> None:
    tiny = pd.DataFrame({"person": [1, 1], "year": [1, 2]})
    with pytest.raises(InputError, match="split is empty"):
        split(tiny, Strategy.group)


def test_groups_with_identical_rows_land_in_one_split() -> None:
    # Twins: two people whose records are identical apart from the identifier.
    people = np.arange(400)
    frame = pd.DataFrame({"person": people, "year": 1, "x": people.astype(float)})
    frame.loc[frame["person"] % 10 == 7, "x"] = -1.0  # 40 people share one record
    key = pd.util.hash_pandas_object(frame[["x"]], index=False).to_numpy()
    result = split_frame(
        frame,
        strategy=Strategy.group,
        fractions=FRACTIONS,
        seed=3,
        group_column="person",
        time_column=None,
        content_key=key,
    )
    homes = {name for name, part in result.frames.items() if (part["x"] == -1.0).any()}
    assert len(homes) == 1
    without = split_frame(
        frame,
        strategy=Strategy.group,
        fractions=FRACTIONS,
        seed=3,
        group_column="person",
        time_column=None,
    )
    assert len({n for n, p in without.frames.items() if (p["x"] == -1.0).any()}) > 1
