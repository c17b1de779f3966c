from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from callvault.moments import as_utc, telnyx_time


def test_a_naive_time_is_taken_as_utc() -> None:
    assert as_utc(datetime(2026, 1, 2, 3, 4, 5)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert as_utc(datetime(2026, 1, 2)).tzinfo is UTC


def test_an_aware_time_is_converted_to_utc() -> None:
    paris = datetime(2026, 1, 2, 4, 0, tzinfo=timezone(timedelta(hours=1)))
    utc = as_utc(paris)
    assert utc.tzinfo is UTC
    assert utc.hour == 3 and utc == paris


def test_none_stays_none() -> None:
    assert as_utc(None) is None


def test_telnyx_time_is_utc_with_milliseconds_and_a_z() -> None:
    moment = datetime(2018, 2, 2, 23, 25, 27, 521999, tzinfo=timezone(timedelta(hours=1)))
    assert telnyx_time(moment) == "2018-02-02T22:25:27.521Z"
