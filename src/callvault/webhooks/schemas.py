"""Shapes of GET /v2/webhook_deliveries: Telnyx's `webhook_delivery` and `attempt` schemas.

Additions (documented in docs/api.md): `attempts[].error_detail` (the error in words: "timed
out after 2 s", "ConnectError: ...") and `next_attempt_at` (when a delivery that is still being
retried will be tried next; null otherwise).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from callvault.pagination import PaginationMetaSimple

DeliveryStatus = Literal["delivered", "failed"]


class HttpRequest(BaseModel):
    url: str
    headers: list[list[str]] = Field(description="[[name, value], ...], at most 10 kB.")


class HttpResponse(BaseModel):
    status: int
    headers: list[list[str]] = Field(description="[[name, value], ...], at most 10 kB.")
    body: str = Field(description="The first 4 kB of the answer (UTF-8, invalid bytes replaced).")


class Http(BaseModel):
    request: HttpRequest
    response: HttpResponse | None = Field(
        default=None, description="Absent when no answer came (timeout, refused connection)."
    )


class Attempt(BaseModel):
    started_at: str
    finished_at: str
    status: DeliveryStatus
    http: Http
    errors: list[int] = Field(
        default_factory=list,
        description="callvault's codes: 190101 non-2xx answer, 190102 timed out, 190103 "
        "connection failed, 190104 address refused by the network policy.",
    )
    error_detail: str | None = Field(default=None, description="The error in words (ours).")


class WebhookEventAsSent(BaseModel):
    """The event as sent: the `data` of a v2 envelope, or the whole flat v1 body."""

    model_config = {"extra": "allow"}

    event_type: str
    id: str | None = None
    occurred_at: str | None = None
    payload: dict[str, Any]
    record_type: Literal["event"] = "event"


class WebhookDelivery(BaseModel):
    id: str
    record_type: Literal["webhook_delivery"] = "webhook_delivery"
    user_id: str = Field(description="The account id.")
    status: DeliveryStatus = Field(
        description="delivered, or failed (also while later attempts are still scheduled: "
        "see next_attempt_at)."
    )
    webhook: WebhookEventAsSent
    started_at: str | None
    finished_at: str | None
    attempts: list[Attempt] = Field(description="Newest first.")
    next_attempt_at: str | None = Field(
        default=None, description="When the next attempt is scheduled (ours); null when done."
    )


class WebhookDeliveryResponse(BaseModel):
    data: WebhookDelivery


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDelivery]
    meta: PaginationMetaSimple
