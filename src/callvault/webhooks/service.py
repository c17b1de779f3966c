"""Webhook events: made in the same transaction as the recording's state change.

The event row is the delivery job (DESIGN.md): its payload is built once, when it is made, in
the application's API version of that moment; the envelope (attempt number, delivered_to), a
default-store recording's fresh link and the signature are made per attempt
(webhooks/delivery.py, webhooks/attempt.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from callvault.applications.models import Application
from callvault.db import utcnow
from callvault.webhooks import payloads, repository
from callvault.webhooks.models import EventStatus, WebhookEvent


class EventRecording(payloads.RecordingFacts, Protocol):
    """What making an event needs of its recording (the Recording model has all of it)."""

    account_id: str
    encryption_details: dict[str, str] | None


@dataclass(frozen=True)
class NewEvent:
    """An event to make about a recording: `call.recording.saved` (with its link) or, with an
    `error` (spec reason, our precise detail), `call.recording.error`.

    A worker passes its own lease so that it can deliver the event right after the commit,
    without another claim (the hot path); if it dies first, the lease expires and any worker
    takes the event. `application`: the recording's, when the caller has read it already.
    """

    recording: EventRecording
    recording_url: str = ""
    error: tuple[str, str] | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    application: Application | None = None


def record_events(session: Session, wanted: Sequence[NewEvent]) -> list[WebhookEvent | None]:
    """Make the events, in one INSERT however many they are; None for a recording whose
    application is gone."""
    made: list[WebhookEvent | None] = []
    for item in wanted:
        application = item.application or repository.application(
            session, item.recording.connection_id
        )
        made.append(None if application is None else _event(item, application))
    repository.add_events(session, [event for event in made if event is not None])
    return made


def _event(wanted: NewEvent, application: Application) -> WebhookEvent:
    now = utcnow()
    recording, api_version = wanted.recording, application.webhook_api_version
    if wanted.error is None:
        event_type = payloads.SAVED
        payload = payloads.saved_payload(
            recording,
            recording_url=wanted.recording_url,
            occurred_at=now,
            api_version=api_version,
            encryption_details=recording.encryption_details,
        )
    else:
        event_type = payloads.ERROR
        reason, detail = wanted.error
        payload = payloads.error_payload(
            recording, reason=reason, detail=detail, occurred_at=now, api_version=api_version
        )
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
        lease_owner=wanted.lease_owner,
        lease_until=wanted.lease_until,
    )
