"""The delivery record of webhook events (Telnyx's `webhook_delivery`): what was sent, to which
URL, what came back, and when. Read-only; the retry action lives in operations/.

For callers (the API, the console):
- `list_deliveries(runtime, account_id, where, page_number=1, page_size=20) -> WebhookDeliveryList`
- `get_delivery(runtime, account_id, delivery_id) -> WebhookDelivery` (404 ApiError when it is not
  the account's, or not a delivery record yet)
- `parse_event_types(text) -> tuple[str, ...]` for `filter[event_type]` ("a,b", v1 names too)

A delivery's id is the webhook event's id (stable across retries: the same id the retry action
takes). An event becomes a delivery record with its first attempt (or when it is given up on
without one, e.g. its application was deleted); its status is `delivered`, else `failed` —
also while later attempts are scheduled, which `next_attempt_at` then says.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from callvault.errors import not_found
from callvault.ids import is_uuid
from callvault.runtime import Runtime
from callvault.webhooks import payloads, repository
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent
from callvault.webhooks.repository import DeliveryFilter
from callvault.webhooks.schemas import (
    Attempt,
    Http,
    HttpRequest,
    HttpResponse,
    PaginationMetaSimple,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookEventAsSent,
)

__all__ = [
    "ERROR_CODES",
    "DeliveryFilter",
    "get_delivery",
    "list_deliveries",
    "parse_event_types",
    "to_delivery",
]

# callvault's own attempt error codes (outside Telnyx's ranges; docs/api.md)
ERROR_CODES = {
    "status": 190101,  # the receiver answered, not with 2xx
    "timeout": 190102,
    "connection": 190103,
    "policy": 190104,  # the address is not public and private networks are not allowed
}
_CANONICAL = {v1: name for name, v1 in payloads.V1_NAMES.items()}


def parse_event_types(text: str) -> tuple[str, ...]:
    """`filter[event_type]`: comma-separated; API v1 names (`recording_saved`) are taken as
    their v2 event (`call.recording.saved`)."""
    names = (part.strip() for part in text.split(","))
    return tuple(sorted({_CANONICAL.get(name, name) for name in names if name}))


def _iso(moment: datetime | None) -> str | None:
    return payloads.timestamp(moment) if moment is not None else None


def attempt_errors(attempt: WebhookAttempt) -> list[int]:
    if attempt.status_code is not None:
        return [] if 200 <= attempt.status_code < 300 else [ERROR_CODES["status"]]
    error = attempt.error or ""
    if error.startswith("timed out"):
        return [ERROR_CODES["timeout"]]
    if error.startswith("refused to connect") or "not a public address" in error:
        return [ERROR_CODES["policy"]]
    return [ERROR_CODES["connection"]] if error else []


def to_attempt(attempt: WebhookAttempt) -> Attempt:
    finished = attempt.finished_at or attempt.created_at
    started = attempt.started_at or finished
    delivered = attempt.status_code is not None and 200 <= attempt.status_code < 300
    response = None
    if attempt.status_code is not None:
        response = HttpResponse(
            status=attempt.status_code,
            headers=attempt.response_headers or [],
            body=attempt.response_body or "",
        )
    return Attempt(
        started_at=payloads.timestamp(started),
        finished_at=payloads.timestamp(finished),
        status="delivered" if delivered else "failed",
        http=Http(
            request=HttpRequest(url=attempt.url, headers=attempt.request_headers or []),
            response=response,
        ),
        errors=attempt_errors(attempt),
        error_detail=attempt.error,
    )


def event_as_sent(event: WebhookEvent) -> WebhookEventAsSent:
    body = payloads.envelope(
        event_id=event.id,
        event_type=event.event_type,
        api_version=event.api_version,
        payload=event.payload,
        occurred_at=event.occurred_at,
        created_at=event.created_at,
        attempt=max(event.attempts, 1),
        delivered_to="",
    )
    data = body.get("data", body)  # v2: the envelope's data; v1: the flat body
    return WebhookEventAsSent.model_validate(data)


def to_delivery(event: WebhookEvent, attempts: Sequence[WebhookAttempt]) -> WebhookDelivery:
    """One event and its attempts (newest first) in Telnyx's webhook_delivery shape (pure)."""
    shown = [to_attempt(a) for a in attempts]
    pending = event.status == EventStatus.PENDING
    return WebhookDelivery(
        id=event.id,
        user_id=event.account_id,
        status="delivered" if event.status == EventStatus.DELIVERED else "failed",
        webhook=event_as_sent(event),
        started_at=min((a.started_at for a in shown), default=None),
        finished_at=max((a.finished_at for a in shown), default=None),
        attempts=shown,
        next_attempt_at=_iso(event.next_attempt_at) if pending else None,
    )


async def get_delivery(runtime: Runtime, account_id: str, delivery_id: str) -> WebhookDelivery:
    if not is_uuid(delivery_id):
        raise not_found(parameter="id")
    async with runtime.sessions() as session:
        event = await repository.delivery_for_account(session, account_id, delivery_id.lower())
        if event is None:
            raise not_found(parameter="id")
        attempts = await repository.attempts_of(session, [event.id])
    return to_delivery(event, attempts[event.id])


async def list_deliveries(
    runtime: Runtime,
    account_id: str,
    where: DeliveryFilter | None = None,
    page_number: int = 1,
    page_size: int = 20,
) -> WebhookDeliveryList:
    where = where or DeliveryFilter()
    async with runtime.sessions() as session:
        events, total = await repository.deliveries_page(
            session, account_id, where, (page_number - 1) * page_size, page_size
        )
        attempts = await repository.attempts_of(session, [event.id for event in events])
    return WebhookDeliveryList(
        data=[to_delivery(event, attempts[event.id]) for event in events],
        meta=PaginationMetaSimple.of(page_number, page_size, total),
    )
