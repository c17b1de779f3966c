"""Re-sending webhook events that gave up (a 4xx, or the whole schedule ran out)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.db import utcnow
from callvault.webhooks.models import EventStatus, WebhookEvent


async def failed_event_ids(session: AsyncSession, account_id: str | None = None) -> list[str]:
    query = select(WebhookEvent.id).where(WebhookEvent.status == EventStatus.FAILED)
    if account_id is not None:
        query = query.where(WebhookEvent.account_id == account_id)
    return list((await session.scalars(query.order_by(WebhookEvent.created_at))).all())


async def requeue_event(
    session: AsyncSession, event_id: str, account_id: str | None = None
) -> WebhookEvent | None:
    """Put a failed event back on the schedule at once; the event id stays the same.

    Returns None when no such event exists for the account. Pending or delivered events are
    returned unchanged: retrying them would only send a duplicate.
    """
    query = select(WebhookEvent).where(WebhookEvent.id == event_id)
    if account_id is not None:
        query = query.where(WebhookEvent.account_id == account_id)
    event = (await session.scalars(query)).one_or_none()
    if event is None or event.status != EventStatus.FAILED:
        return event
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == EventStatus.FAILED)
        .values(
            status=EventStatus.PENDING,
            next_attempt_at=utcnow(),
            lease_owner=None,
            lease_until=None,
        )
    )
    await session.refresh(event)
    return event
