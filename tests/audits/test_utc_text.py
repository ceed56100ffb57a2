"""The log's time stamp, formatted by hand for speed, is strftime's bytes for every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from audits.log.records import utc_text

zones = st.just(UTC) | st.integers(-23 * 60, 23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=zones))
def test_utc_text_is_strftime_of_the_utc_time(value: datetime) -> None:
    expected = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert utc_text(value) == expected


def test_years_before_1000_keep_strftime_form() -> None:
    early = datetime(999, 12, 31, 23, 59, 59, 7, tzinfo=UTC)
    assert utc_text(early) == early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
