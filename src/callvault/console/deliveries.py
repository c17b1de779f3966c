"""Webhook deliveries as the console shows them, read through the service behind
`GET /v2/webhook_deliveries` (webhooks/deliveries.py): the same records, filters and 404 rules.
Retry goes through `operations.retries.requeue_event`, as
`POST /v2/webhook_deliveries/{id}/actions/retry` does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from callvault.db import transaction
from callvault.errors import conflict, not_found
from callvault.operations.retries import requeue_event
from callvault.runtime import Runtime
from callvault.webhooks import deliveries
from callvault.webhooks.models import EventStatus
from callvault.webhooks.repository import DeliveryFilter
from callvault.webhooks.schemas import Attempt, WebhookDelivery

PAGE_SIZE = 25
STATUSES = ("delivered", "failed")  # the API's filter[status][eq]


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class AttemptView:
    number: int
    attempt: Attempt

    @property
    def started_at(self) -> datetime | None:
        return _moment(self.attempt.started_at)

    @property
    def latency_ms(self) -> float | None:
        started, finished = _moment(self.attempt.started_at), _moment(self.attempt.finished_at)
        if started is None or finished is None:
            return None
        return (finished - started).total_seconds() * 1000

    @property
    def status_code(self) -> int | None:
        response = self.attempt.http.response
        return response.status if response is not None else None

    @property
    def ok(self) -> bool:
        return self.attempt.status == "delivered"


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery

    @property
    def attempts(self) -> list[AttemptView]:
        """Oldest first (the API lists them newest first)."""
        oldest_first = list(reversed(self.delivery.attempts))
        return [AttemptView(i + 1, a) for i, a in enumerate(oldest_first)]

    @property
    def last_attempt(self) -> AttemptView | None:
        attempts = self.attempts
        return attempts[-1] if attempts else None

    @property
    def retryable(self) -> bool:
        """Given up on (failed, nothing scheduled): what the retry action accepts."""
        return self.delivery.status == "failed" and self.delivery.next_attempt_at is None

    @property
    def shown_status(self) -> str:
        if self.delivery.status == "failed" and self.delivery.next_attempt_at is not None:
            return "retrying"
        return self.delivery.status

    @property
    def recording_id(self) -> str | None:
        value = self.delivery.webhook.payload.get("recording_id")
        return value if isinstance(value, str) else None

    @property
    def created_at(self) -> datetime | None:
        return _moment(self.delivery.started_at)

    @property
    def next_attempt_at(self) -> datetime | None:
        return _moment(self.delivery.next_attempt_at)

    @property
    def webhook_json(self) -> str:
        return json.dumps(self.delivery.webhook.model_dump(mode="json"), indent=2, sort_keys=True)


@dataclass(frozen=True)
class DeliveryPage:
    items: list[DeliveryView]
    page_number: int
    total_pages: int
    total_results: int


async def list_deliveries(
    runtime: Runtime,
    account_id: str,
    *,
    status: str | None,
    contains: str | None,
    page_number: int,
) -> DeliveryPage:
    """`contains`: the API's filter[webhook][contains] (event id, type or payload text, such
    as a recording id)."""
    found = await deliveries.list_deliveries(
        runtime,
        account_id,
        DeliveryFilter(status=status, webhook_contains=contains),
        page_number=page_number,
        page_size=PAGE_SIZE,
    )
    return DeliveryPage(
        items=[DeliveryView(item) for item in found.data],
        page_number=page_number,
        total_pages=max(1, found.meta.total_pages),
        total_results=found.meta.total_results,
    )


async def get_delivery(runtime: Runtime, account_id: str, delivery_id: str) -> DeliveryView:
    return DeliveryView(await deliveries.get_delivery(runtime, account_id, delivery_id))


async def retry(runtime: Runtime, account_id: str, event_id: str) -> None:
    async with transaction(runtime.sessions) as session:
        event = await requeue_event(session, event_id.lower(), account_id)
    if event is None:
        raise not_found(parameter="event_id")
    if event.status == EventStatus.DELIVERED:
        raise conflict("The event was delivered already.")
    runtime.work_ready.set()
