"""Points in time: the one rule for bringing a datetime to UTC. Standard library only, so any
module may use it, storage providers included.

A time without a zone is taken as UTC (the zone every Telnyx timestamp is in, and what SQLite
hands back); a time with a zone is converted to UTC."""

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
