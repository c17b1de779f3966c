"""Webhook events: made in the same transaction as the recording's state change.

The event row is the delivery job (DESIGN.md): its payload is built once, when it is made, in
the application's API version of that moment; the envelope (attempt number, delivered_to), a
default-store recording's fresh link and the signature are made per attempt
(webhooks/delivery.py, webhooks/attempt.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications.models import Application
from callvault.db import utcnow
from callvault.webhooks import payloads, repository
from callvault.webhooks.models import EventStatus, WebhookEvent


class EventRecording(payloads.RecordingFacts, Protocol):
    """What making an event needs of its recording (the Recording model has all of it)."""

    account_id: str
    encryption_details: dict[str, str] | None


async def record_saved(
    session: AsyncSession,
    recording: EventRecording,
    *,
    recording_url: str,
    lease_owner: str | None = None,
    lease_until: datetime | None = None,
    application: Application | None = None,
) -> WebhookEvent | None:
    """`call.recording.saved` for the recording's application (None if it has none anymore).

    The worker passes its own lease so that it can deliver the event right after the commit,
    without another claim (the hot path); if it dies first, the lease expires and any worker
    takes the event. `application`: the recording's, when the caller has read it already.
    """
    if application is None:
        application = await repository.application(session, recording.connection_id)
    if application is None:
        return None
    event = saved_event(
        recording,
        application,
        recording_url=recording_url,
        lease_owner=lease_owner,
        lease_until=lease_until,
    )
    await repository.add_events(session, [event])
    return event


def saved_event(
    recording: EventRecording,
    application: Application,
    *,
    recording_url: str,
    lease_owner: str | None,
    lease_until: datetime | None,
) -> WebhookEvent:
    """The `call.recording.saved` event of `record_saved`, not yet added: for callers that add
    many at once (`repository.add_events`)."""
    now = utcnow()
    payload = payloads.saved_payload(
        recording,
        recording_url=recording_url,
        occurred_at=now,
        api_version=application.webhook_api_version,
        encryption_details=recording.encryption_details,
    )
    return _event(
        recording,
        payloads.SAVED,
        application.webhook_api_version,
        payload,
        now,
        lease_owner,
        lease_until,
    )


async def record_error(
    session: AsyncSession,
    recording: EventRecording,
    *,
    reason: str,
    detail: str,
    lease_owner: str | None = None,
    lease_until: datetime | None = None,
    application: Application | None = None,
) -> WebhookEvent | None:
    """`call.recording.error` with the spec's reason and our precise detail."""
    if application is None:
        application = await repository.application(session, recording.connection_id)
    if application is None:
        return None
    now = utcnow()
    payload = payloads.error_payload(
        recording,
        reason=reason,
        detail=detail,
        occurred_at=now,
        api_version=application.webhook_api_version,
    )
    event = _event(
        recording,
        payloads.ERROR,
        application.webhook_api_version,
        payload,
        now,
        lease_owner,
        lease_until,
    )
    await repository.add_events(session, [event])
    return event


def _event(
    recording: EventRecording,
    event_type: str,
    api_version: str,
    payload: dict[str, object],
    now: datetime,
    lease_owner: str | None,
    lease_until: datetime | None,
) -> WebhookEvent:
    return WebhookEvent(
        id=str(uuid.uuid4()),
        account_id=recording.account_id,
        application_id=recording.connection_id,
        recording_id=recording.id,
        event_type=event_type,
        api_version=api_version,
        payload=payload,
        occurred_at=now,
        created_at=now,
        status=EventStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        lease_owner=lease_owner,
        lease_until=lease_until,
    )
