"""Every query on webhook events and their attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
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
    """What one delivery round needs, if the event is still pending and leased to `owner`.

    One query (a round runs for every recording: four primary-key reads were a tenth of a
    delivery's CPU); the application and the recording may be gone, the account may not."""
    row = (
        await session.execute(
            select(WebhookEvent, Account, Application, Recording)
            .join(Account, Account.id == WebhookEvent.account_id)
            .outerjoin(Application, Application.id == WebhookEvent.application_id)
            .outerjoin(Recording, Recording.id == WebhookEvent.recording_id)
            .where(WebhookEvent.id == event_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        return None
    event, account, application, recording = row
    if event.status != EventStatus.PENDING or event.lease_owner != owner:
        return None
    return DeliveryContext(
        event=event, application=application, account=account, recording=recording
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
