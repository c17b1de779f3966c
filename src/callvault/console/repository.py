"""Every query the console makes itself: sessions, the overview's counts, webhook deliveries.

Everything else the pages show comes from the services the /v2 API uses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts.models import Account, ApiKey
from callvault.console.models import ConsoleSession
from callvault.recordings.models import Recording, RecordingStatus
from callvault.webhooks.models import WebhookAttempt, WebhookEvent

# ---- sessions


async def add_session(session: AsyncSession, row: ConsoleSession) -> None:
    session.add(row)
    await session.flush()


async def account_of_session(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[Account, str] | None:
    """The account and the API key id of a live session."""
    row = (
        await session.execute(
            select(Account, ApiKey.id)
            .join(ConsoleSession, ConsoleSession.account_id == Account.id)
            # a session lives only as long as the key it was signed in with
            .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
            .where(ConsoleSession.token_hash == token_hash, ConsoleSession.expires_at > now)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash))


async def delete_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))


# ---- overview


async def recording_outcomes_since(
    session: AsyncSession, account_id: str, since: datetime
) -> list[tuple[str, datetime]]:
    """(status, updated_at) of the account's recordings that reached stored or failed since."""
    rows = await session.execute(
        select(Recording.status, Recording.updated_at).where(
            Recording.account_id == account_id,
            Recording.updated_at >= since,
            Recording.status.in_([RecordingStatus.STORED, RecordingStatus.FAILED]),
        )
    )
    return [(status, moment) for status, moment in rows]


async def attempt_outcomes_since(
    session: AsyncSession, account_id: str, since: datetime
) -> list[tuple[int | None, datetime]]:
    """(status code, time) of every webhook attempt made for the account since `since`."""
    rows = await session.execute(
        select(WebhookAttempt.status_code, WebhookAttempt.created_at)
        .join(WebhookEvent, WebhookEvent.id == WebhookAttempt.event_id)
        .where(WebhookEvent.account_id == account_id, WebhookAttempt.created_at >= since)
    )
    return [(code, moment) for code, moment in rows]
