"""Points in time: bringing a datetime to UTC, and writing one as Telnyx does. Standard library
only, so any module may use it, storage providers included.

`as_utc`: a time without a zone is taken as UTC (the zone every Telnyx timestamp is in, and what
SQLite hands back); a time with a zone is converted to UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def telnyx_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as Telnyx writes it (2018-02-02T22:25:27.521Z)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
