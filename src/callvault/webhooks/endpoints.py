"""`GET /v2/webhook_deliveries` and `GET /v2/webhook_deliveries/{id}` (Telnyx's shape); the
retry action on the same ids is in operations/endpoints.py."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import StringConstraints

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime
from callvault.errors import error_responses
from callvault.query import IsoDateTime
from callvault.runtime import Runtime
from callvault.webhooks import deliveries
from callvault.webhooks.repository import DeliveryFilter
from callvault.webhooks.schemas import WebhookDeliveryList, WebhookDeliveryResponse

router = APIRouter(prefix="/v2/webhook_deliveries", tags=["Webhooks"])

Text = Annotated[str, StringConstraints(min_length=1, max_length=255)] | None
Time = IsoDateTime | None


@router.get(
    "",
    response_model=WebhookDeliveryList,
    operation_id="GetWebhookDeliveries",
    summary="List webhook deliveries",
    description="Every event callvault tried to deliver, newest first, with every attempt. "
    "An unknown query parameter answers 400.",
    responses=error_responses(400, 401, 422),
)
async def list_webhook_deliveries(
    page_number: Annotated[int, Query(alias="page[number]", ge=1)] = 1,
    page_size: Annotated[int, Query(alias="page[size]", ge=1, le=250)] = 20,
    status: Annotated[Literal["delivered", "failed"] | None, Query(alias="filter[status][eq]")] = (
        None
    ),
    event_type: Annotated[
        Text,
        Query(
            alias="filter[event_type]",
            description="Comma-separated event types (call.recording.saved, recording_saved, ...).",
        ),
    ] = None,
    webhook_contains: Annotated[Text, Query(alias="filter[webhook][contains]")] = None,
    attempts_contains: Annotated[Text, Query(alias="filter[attempts][contains]")] = None,
    started_at_gte: Annotated[Time, Query(alias="filter[started_at][gte]")] = None,
    started_at_lte: Annotated[Time, Query(alias="filter[started_at][lte]")] = None,
    finished_at_gte: Annotated[Time, Query(alias="filter[finished_at][gte]")] = None,
    finished_at_lte: Annotated[Time, Query(alias="filter[finished_at][lte]")] = None,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> WebhookDeliveryList:
    where = DeliveryFilter(
        status=status,
        event_types=deliveries.parse_event_types(event_type) if event_type else (),
        webhook_contains=webhook_contains,
        attempts_contains=attempts_contains,
        started_at_gte=started_at_gte,
        started_at_lte=started_at_lte,
        finished_at_gte=finished_at_gte,
        finished_at_lte=finished_at_lte,
    )
    return await deliveries.list_deliveries(runtime, account.id, where, page_number, page_size)


@router.get(
    "/{id}",
    response_model=WebhookDeliveryResponse,
    operation_id="GetWebhookDelivery",
    summary="Find webhook_delivery details by ID",
    responses=error_responses(401, 404),
)
async def get_webhook_delivery(
    delivery_id: Annotated[str, Path(alias="id", description="The webhook event id (a UUID).")],
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> WebhookDeliveryResponse:
    data = await deliveries.get_delivery(runtime, account.id, delivery_id)
    return WebhookDeliveryResponse(data=data)
