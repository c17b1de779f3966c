"""Every query of the recordings domain (ingest and the Recordings API)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications.models import Application
from callvault.recordings.models import Recording, RecordingStatus


@dataclass(frozen=True)
class RecordingFilter:
    """Every filter of `GET /v2/recordings`; None = not filtered. Times are aware (UTC)."""

    connection_id: str | None = None
    call_leg_id: str | None = None
    call_control_id: str | None = None
    call_session_id: str | None = None
    conference_id: str | None = None
    conference_region: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    sip_call_id: str | None = None
    created_at_gte: datetime | None = None
    created_at_lte: datetime | None = None
    start_time_gte: datetime | None = None
    start_time_lte: datetime | None = None
    end_time_gte: datetime | None = None
    end_time_lte: datetime | None = None
    status: str | None = None  # received | stored | failed (the console's filter)


async def application_account_id(session: AsyncSession, connection_id: str) -> str | None:
    """The account that owns the application with this id (the recording's connection)."""
    return await session.scalar(
        select(Application.account_id).where(Application.id == connection_id)
    )


async def by_natural_key(
    session: AsyncSession, connection_id: str, call_leg_id: str, started_at: datetime
) -> Recording | None:
    """The recording ingest already accepted for this (connection, leg, start), if any."""
    return await session.scalar(
        select(Recording).where(
            Recording.connection_id == connection_id,
            Recording.call_leg_id == call_leg_id,
            Recording.recording_started_at == started_at,
        )
    )


async def default_key_in_use(session: AsyncSession, key: str) -> bool:
    """Whether a live recording's bytes sit under this default-store key."""
    found = await session.scalar(
        select(Recording.id)
        .where(Recording.default_store_key == key, Recording.status != RecordingStatus.DELETED)
        .limit(1)
    )
    return found is not None


async def add(session: AsyncSession, recording: Recording) -> None:
    session.add(recording)
    await session.flush()


async def live_for_account(
    session: AsyncSession, account_id: str, recording_id: str, *, for_update: bool = False
) -> Recording | None:
    """The account's recording unless it was deleted (another account's id: None)."""
    query = select(Recording).where(
        Recording.id == recording_id,
        Recording.account_id == account_id,
        Recording.status != RecordingStatus.DELETED,
    )
    if for_update:
        # PostgreSQL: lock the row against the worker; SQLite's BEGIN IMMEDIATE already does
        query = query.with_for_update()
    return await session.scalar(query)


async def live_ids_for_account(
    session: AsyncSession, account_id: str, recording_ids: Sequence[str]
) -> list[str]:
    rows = await session.scalars(
        select(Recording.id).where(
            Recording.id.in_(list(recording_ids)),
            Recording.account_id == account_id,
            Recording.status != RecordingStatus.DELETED,
        )
    )
    return list(rows)


async def page_for_account(
    session: AsyncSession, account_id: str, where: RecordingFilter, offset: int, limit: int
) -> tuple[list[Recording], int]:
    """One page of the account's live recordings, newest first, and the total count."""
    conditions = [Recording.account_id == account_id, Recording.status != RecordingStatus.DELETED]
    for column, value in (
        (Recording.connection_id, where.connection_id),
        (Recording.call_leg_id, where.call_leg_id),
        (Recording.call_control_id, where.call_control_id),
        (Recording.call_session_id, where.call_session_id),
        (Recording.conference_id, where.conference_id),
        (Recording.conference_region, where.conference_region),
        (Recording.from_number, where.from_number),
        (Recording.to_number, where.to_number),
        (Recording.sip_call_id, where.sip_call_id),
        (Recording.status, where.status),
    ):
        if value is not None:
            conditions.append(column == value)
    ranges: tuple[tuple[Any, datetime | None, datetime | None], ...] = (
        (Recording.created_at, where.created_at_gte, where.created_at_lte),
        (Recording.recording_started_at, where.start_time_gte, where.start_time_lte),
        (Recording.recording_ended_at, where.end_time_gte, where.end_time_lte),
    )
    for column, low, high in ranges:
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column <= high)
    total = int(
        await session.scalar(select(func.count()).select_from(Recording).where(*conditions)) or 0
    )
    if offset >= total:
        # a page past the end is empty; asking the database would overflow its 64-bit OFFSET
        # for absurd page numbers (a 500)
        return [], total
    rows = await session.scalars(
        select(Recording)
        .where(*conditions)
        .order_by(Recording.created_at.desc(), Recording.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total
