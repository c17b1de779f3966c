"""`POST /v2/recordings/{recording_id}/actions/redeliver`: run a recording through the pipeline
again (recordings/redelivery.py says when that is allowed)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime
from callvault.errors import error_responses
from callvault.recordings.redelivery import redeliver
from callvault.runtime import Runtime

router = APIRouter(prefix="/v2/recordings", tags=["recordings"])


class RedeliveryData(BaseModel):
    id: str = Field(description="The recording id")
    record_type: str = "recording"
    status: str = Field(description="`received`: queued for the worker")


class RedeliveryResponse(BaseModel):
    data: RedeliveryData


@router.post(
    "/{recording_id}/actions/redeliver",
    status_code=202,
    response_model=RedeliveryResponse,
    summary="Store a recording again (after a custom-storage failure) and send its webhook",
    responses=error_responses(401, 404, 422),
)
async def redeliver_recording(
    recording_id: str,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RedeliveryResponse:
    queued = await redeliver(runtime, account.id, recording_id)
    return RedeliveryResponse(data=RedeliveryData(id=queued.id, status=queued.status))
