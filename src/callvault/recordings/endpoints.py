"""HTTP layer of the recordings domain: ingest (`/internal/v1`) and the Recordings API (`/v2`)."""

from __future__ import annotations

import errno
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import StringConstraints

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime, require_ingest_token
from callvault.db import database_unavailable
from callvault.errors import ApiError, database_unavailable_error, error_responses
from callvault.query import IsoDateTime
from callvault.recordings import ingest as ingest_service
from callvault.recordings import service
from callvault.recordings.repository import RecordingFilter
from callvault.recordings.schemas import (
    DeleteRecordingsRequest,
    IngestResponse,
    IngestResult,
    RecordingList,
    RecordingResponse,
    StatusOk,
)
from callvault.recordings.upload import BodyPace, incoming_file, receive_upload
from callvault.runtime import Runtime

ingest_router = APIRouter(prefix="/internal/v1", tags=["ingest"])
router = APIRouter(prefix="/v2/recordings", tags=["recordings"])

# exact, case-sensitive matches (as the spec says); ids are at most 128 characters
FilterText = Annotated[str, StringConstraints(min_length=1, max_length=255)] | None
FilterTime = IsoDateTime | None

_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["metadata", "audio"],
                    "properties": {
                        "metadata": {
                            "type": "string",
                            "description": "JSON: connection_id, call_control_id, call_leg_id, "
                            "call_session_id, format (wav|mp3), channels (single|dual), "
                            "recording_started_at, recording_ended_at (ISO 8601), client_state "
                            "(base64 or null), custom_file_name ([A-Za-z0-9._-]{1,40}, optional); "
                            "optional: from, to, conference_id, conference_region, "
                            "initiated_by, sip_call_id, source (call|conference).",
                        },
                        "audio": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


@ingest_router.post(
    "/recordings",
    status_code=202,
    response_model=IngestResponse,
    summary="Hand a finished recording to callvault (media servers)",
    openapi_extra=_INGEST_BODY,
    dependencies=[Depends(require_ingest_token)],
    responses={
        200: {"model": IngestResponse, "description": "Already received: the same recording."},
        **error_responses(400, 401, 408, 413, 415, 422, 500, 503, 507),
    },
)
async def ingest_recording(
    request: Request, runtime: Runtime = Depends(get_runtime)
) -> JSONResponse:
    return await answer_ingest(request, runtime)


async def answer_ingest(request: Request, runtime: Runtime, **options: Any) -> JSONResponse:
    """Receive an ingest request (`options` as `receive_upload` takes them: where the audio and
    the metadata are) and answer 202, or 200 for the same recording again."""
    settings = runtime.settings
    plan = ingest_service.IngestPlan(runtime)  # its one read runs once the metadata is known
    try:
        # the temp file goes whatever happens (incoming_file): no partial file is left
        with incoming_file(settings.data_dir) as path:
            upload = await receive_upload(
                request,
                path,
                settings.max_recording_bytes,
                plan.recipient,
                BodyPace.from_env(settings.environ),
                **options,
            )
            outcome = await ingest_service.ingest(runtime, upload, plan)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ingest_service.no_space("the data dir") from None
        if database_unavailable(exc):
            raise database_unavailable_error() from None
        raise
    except ApiError:
        raise
    except Exception as exc:
        # the database went away during the lookups (ingest's own insert says so itself)
        if database_unavailable(exc):
            raise database_unavailable_error() from None
        raise
    body = IngestResponse(data=IngestResult(id=outcome.recording_id, status=outcome.status))
    return JSONResponse(body.model_dump(), status_code=202 if outcome.created else 200)


@router.get(
    "",
    response_model=RecordingList,
    summary="List call recordings",
    description="Every filter of Telnyx's spec, combined with AND. An unknown query parameter "
    "answers 400 (source.parameter names it).",
    operation_id="GetRecordings",
    responses=error_responses(400, 401, 422),
)
async def list_recordings(
    page_number: Annotated[int, Query(alias="page[number]", ge=1)] = 1,
    page_size: Annotated[int, Query(alias="page[size]", ge=1, le=250)] = 20,
    connection_id: Annotated[FilterText, Query(alias="filter[connection_id]")] = None,
    call_leg_id: Annotated[FilterText, Query(alias="filter[call_leg_id]")] = None,
    call_control_id: Annotated[FilterText, Query(alias="filter[call_control_id]")] = None,
    call_session_id: Annotated[FilterText, Query(alias="filter[call_session_id]")] = None,
    conference_id: Annotated[FilterText, Query(alias="filter[conference_id]")] = None,
    conference_region: Annotated[FilterText, Query(alias="filter[conference_region]")] = None,
    from_: Annotated[FilterText, Query(alias="filter[from]")] = None,
    to: Annotated[FilterText, Query(alias="filter[to]")] = None,
    sip_call_id: Annotated[FilterText, Query(alias="filter[sip_call_id]")] = None,
    created_at_gte: Annotated[FilterTime, Query(alias="filter[created_at][gte]")] = None,
    created_at_lte: Annotated[FilterTime, Query(alias="filter[created_at][lte]")] = None,
    start_time_gte: Annotated[FilterTime, Query(alias="filter[start_time][gte]")] = None,
    start_time_lte: Annotated[FilterTime, Query(alias="filter[start_time][lte]")] = None,
    end_time_gte: Annotated[FilterTime, Query(alias="filter[end_time][gte]")] = None,
    end_time_lte: Annotated[FilterTime, Query(alias="filter[end_time][lte]")] = None,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingList:
    where = RecordingFilter(
        connection_id=connection_id,
        call_leg_id=call_leg_id,
        call_control_id=call_control_id,
        call_session_id=call_session_id,
        conference_id=conference_id,
        conference_region=conference_region,
        from_number=from_,
        to_number=to,
        sip_call_id=sip_call_id,
        created_at_gte=created_at_gte,
        created_at_lte=created_at_lte,
        start_time_gte=start_time_gte,
        start_time_lte=start_time_lte,
        end_time_gte=end_time_gte,
        end_time_lte=end_time_lte,
    )
    return await service.list_recordings(runtime, account.id, where, page_number, page_size)


@router.get(
    "/{recording_id}",
    response_model=RecordingResponse,
    summary="Retrieve a call recording (with fresh download_urls)",
    responses=error_responses(401, 404),
)
async def get_recording(
    recording_id: str,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingResponse:
    return RecordingResponse(data=await service.get_recording(runtime, account.id, recording_id))


@router.delete(
    "/{recording_id}",
    response_model=RecordingResponse,
    summary="Delete a call recording (the default-store copy; a customer bucket is left alone)",
    responses=error_responses(401, 404, 503),
)
async def delete_recording(
    recording_id: str,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingResponse:
    data = await service.delete_recording(runtime, account.id, recording_id)
    return RecordingResponse(data=data)


@router.post(
    "/actions/delete",
    response_model=StatusOk,
    summary="Delete a list of call recordings (unknown ids are skipped)",
    responses=error_responses(400, 401, 422, 503),
)
async def delete_recordings(
    body: DeleteRecordingsRequest,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> StatusOk:
    await service.delete_recordings(runtime, account.id, body.ids)
    return StatusOk()
