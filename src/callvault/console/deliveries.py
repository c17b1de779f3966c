"""Webhook deliveries as the console shows them: events with their attempt timelines.

Built on the webhooks tables directly (events and attempts); retry goes through the same
`operations.retries.requeue_event` as `POST /v2/webhook_deliveries/{id}/actions/retry`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from callvault.console import repository
from callvault.db import transaction
from callvault.errors import conflict, not_found
from callvault.operations.retries import requeue_event
from callvault.runtime import Runtime
from callvault.webhooks import payloads
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent

PAGE_SIZE = 25
STATUSES = tuple(status.value for status in EventStatus)


@dataclass(frozen=True)
class Delivery:
    event: WebhookEvent
    attempts: list[WebhookAttempt]

    @property
    def payload_json(self) -> str:
        """The body of the last attempt, rebuilt by the function that built it
        (`webhooks.payloads.envelope`); the stored payload while nothing was sent yet."""
        event, last = self.event, self.last_attempt
        if last is None:
            return json.dumps(event.payload, indent=2, sort_keys=True)
        body = payloads.envelope(
            event_id=event.id,
            event_type=event.event_type,
            api_version=event.api_version,
            payload=event.payload,
            occurred_at=event.occurred_at,
            created_at=event.created_at,
            attempt=last.attempt,
            delivered_to=last.url,
        )
        return json.dumps(body, indent=2, sort_keys=True)

    @property
    def last_attempt(self) -> WebhookAttempt | None:
        return self.attempts[-1] if self.attempts else None


@dataclass(frozen=True)
class DeliveryPage:
    items: list[Delivery]
    page_number: int
    total_pages: int
    total_results: int


async def list_deliveries(
    runtime: Runtime,
    account_id: str,
    *,
    status: str | None,
    recording_id: str | None,
    page_number: int,
) -> DeliveryPage:
    async with runtime.sessions() as session:
        events, total = await repository.events_page(
            session,
            account_id,
            status=status,
            recording_id=recording_id,
            offset=(page_number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        attempts = await repository.attempts_of(session, [event.id for event in events])
    return DeliveryPage(
        items=[Delivery(event, attempts[event.id]) for event in events],
        page_number=page_number,
        total_pages=max(1, math.ceil(total / PAGE_SIZE)),
        total_results=total,
    )


async def get_delivery(runtime: Runtime, account_id: str, event_id: str) -> Delivery:
    async with runtime.sessions() as session:
        event = await repository.event_for_account(session, account_id, event_id.lower())
        if event is None:
            raise not_found(parameter="event_id")
        attempts = await repository.attempts_of(session, [event.id])
    return Delivery(event, attempts[event.id])


async def retry(runtime: Runtime, account_id: str, event_id: str) -> None:
    async with transaction(runtime.sessions) as session:
        event = await requeue_event(session, event_id.lower(), account_id)
    if event is None:
        raise not_found(parameter="event_id")
    if event.status == EventStatus.DELIVERED:
        raise conflict("The event was delivered already.")
    runtime.work_ready.set()
