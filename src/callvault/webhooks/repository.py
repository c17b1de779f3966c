"""Every query on webhook events and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.recordings.models import Recording
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent


async def application(session: AsyncSession, application_id: str) -> Application | None:
    return await session.get(Application, application_id)


async def add_event(session: AsyncSession, event: WebhookEvent) -> None:
    session.add(event)
    await session.flush()


@dataclass(frozen=True)
class DeliveryContext:
    event: WebhookEvent
    application: Application | None  # None: deleted since the event was made
    account: Account
    recording: Recording | None


async def delivery_context(
    session: AsyncSession, event_id: str, owner: str
) -> DeliveryContext | None:
    """What one delivery round needs, if the event is still pending and leased to `owner`."""
    event = await session.get(WebhookEvent, event_id, populate_existing=True)
    if event is None or event.status != EventStatus.PENDING or event.lease_owner != owner:
        return None
    account = await session.get(Account, event.account_id)
    if account is None:
        return None
    return DeliveryContext(
        event=event,
        application=await session.get(Application, event.application_id),
        account=account,
        recording=(
            await session.get(Recording, event.recording_id) if event.recording_id else None
        ),
    )


async def add_attempts(session: AsyncSession, attempts: Sequence[WebhookAttempt]) -> None:
    session.add_all(list(attempts))
    await session.flush()


async def finish_round(
    session: AsyncSession, event_id: str, owner: str, values: dict[str, Any]
) -> bool:
    """Write a round's outcome and give the lease back; False if the lease was lost."""
    result = await session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event_id,
            WebhookEvent.lease_owner == owner,
            WebhookEvent.status == EventStatus.PENDING,
        )
        .values(lease_owner=None, lease_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
