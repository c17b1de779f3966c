from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime
from callvault.db import transaction
from callvault.errors import conflict, error_responses, not_found
from callvault.operations.retries import requeue_event
from callvault.runtime import Runtime
from callvault.webhooks.models import EventStatus

router = APIRouter(prefix="/v2/webhook_deliveries", tags=["webhook deliveries"])

EventId = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$", description="Webhook event id")]


class DeliveryRetry(BaseModel):
    id: str
    record_type: str = "webhook_delivery"
    status: str
    attempts: int


class DeliveryRetryResponse(BaseModel):
    data: DeliveryRetry


@router.post(
    "/{event_id}/actions/retry",
    status_code=202,
    response_model=DeliveryRetryResponse,
    summary="Send a webhook event again after its deliveries gave up",
    responses=error_responses(401, 404, 409, 422),
)
async def retry_delivery(
    event_id: EventId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> DeliveryRetryResponse:
    async with transaction(runtime.sessions) as session:
        event = await requeue_event(session, event_id.lower(), account.id)
    if event is None:
        raise not_found(parameter="event_id")
    if event.status == EventStatus.DELIVERED:
        raise conflict("The event was delivered already.")
    runtime.work_ready.set()
    return DeliveryRetryResponse(
        data=DeliveryRetry(id=event.id, status=event.status, attempts=event.attempts)
    )
