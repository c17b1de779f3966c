"""HTTP layer of /v2/call_control_applications (Telnyx-compatible)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from callvault.accounts.models import Account
from callvault.applications import service
from callvault.applications.schemas import (
    CallControlApplication,
    CallControlApplicationResponse,
    CreateCallControlApplicationRequest,
    ListCallControlApplicationsResponse,
    UpdateCallControlApplicationRequest,
)
from callvault.auth import current_account, get_runtime
from callvault.errors import error_responses
from callvault.pagination import PaginationMeta
from callvault.runtime import Runtime

router = APIRouter(
    prefix="/v2/call_control_applications",
    tags=["Call Control Applications"],
    responses=error_responses(401, 422),
)

ApplicationId = Annotated[
    str,
    Path(alias="id", description="Identifies the application.", examples=["1684641123236054244"]),
]
Sort = Literal[
    "created_at", "-created_at", "connection_name", "-connection_name", "active", "-active"
]


@router.post(
    "",
    status_code=201,
    response_model=CallControlApplicationResponse,
    operation_id="CreateCallControlApplication",
    summary="Create a call control application",
    responses=error_responses(400),
)
async def create_application(
    body: CreateCallControlApplicationRequest,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CallControlApplicationResponse:
    application = await service.create(runtime, account.id, body)
    return CallControlApplicationResponse(data=CallControlApplication.of(application))


@router.get(
    "",
    response_model=ListCallControlApplicationsResponse,
    operation_id="ListCallControlApplications",
    summary="List call control applications",
    description="Filters: filter[application_name][contains], "
    "filter[outbound.outbound_voice_profile_id]. The spec's other filters (call events and "
    "conferences) do not apply to applications and, like any unknown parameter, answer 400.",
    responses=error_responses(400),
)
async def list_applications(
    page_number: int = Query(1, alias="page[number]", ge=1, description="The page to load."),
    page_size: int = Query(20, alias="page[size]", ge=1, le=250, description="Page size."),
    sort: Sort = Query(
        "-created_at",
        description="Order: created_at, connection_name (the application name) or active; "
        "a leading '-' sorts descending. Default: newest first.",
    ),
    name_contains: str | None = Query(
        None,
        alias="filter[application_name][contains]",
        min_length=3,
        description="Only applications whose name contains this text (case-insensitive).",
    ),
    outbound_voice_profile_id: str | None = Query(
        None,
        alias="filter[outbound.outbound_voice_profile_id]",
        pattern=r"^[0-9]{1,19}$",
        description="Only applications with this outbound voice profile.",
    ),
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> ListCallControlApplicationsResponse:
    page = await service.list_page(
        runtime,
        account.id,
        page_number=page_number,
        page_size=page_size,
        sort=sort,
        name_contains=name_contains,
        outbound_voice_profile_id=outbound_voice_profile_id,
    )
    return ListCallControlApplicationsResponse(
        data=[CallControlApplication.of(item) for item in page.items],
        meta=PaginationMeta.of(page.page_number, page.page_size, page.total_results),
    )


@router.get(
    "/{id}",
    response_model=CallControlApplicationResponse,
    operation_id="RetrieveCallControlApplication",
    summary="Retrieve a call control application",
    responses=error_responses(404),
)
async def retrieve_application(
    application_id: ApplicationId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CallControlApplicationResponse:
    application = await service.retrieve(runtime, account.id, application_id)
    return CallControlApplicationResponse(data=CallControlApplication.of(application))


@router.patch(
    "/{id}",
    response_model=CallControlApplicationResponse,
    operation_id="UpdateCallControlApplication",
    summary="Update a call control application",
    responses=error_responses(400, 404),
)
async def update_application(
    body: UpdateCallControlApplicationRequest,
    application_id: ApplicationId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CallControlApplicationResponse:
    application = await service.update(runtime, account.id, application_id, body)
    return CallControlApplicationResponse(data=CallControlApplication.of(application))


@router.delete(
    "/{id}",
    response_model=CallControlApplicationResponse,
    operation_id="DeleteCallControlApplication",
    summary="Delete a call control application (and its storage credentials)",
    description="Answers the deleted application.",
    responses=error_responses(404),
)
async def delete_application(
    application_id: ApplicationId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CallControlApplicationResponse:
    application = await service.delete(runtime, account.id, application_id)
    return CallControlApplicationResponse(data=CallControlApplication.of(application))
