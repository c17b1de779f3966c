"""HTTP layer of /v2/custom_storage_credentials/{connection_id} (Telnyx-compatible)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime, runtime_of
from callvault.credentials import service
from callvault.credentials.schemas import (
    AwsRoleSetupResponse,
    CredentialsRequest,
    CredentialsResponse,
    ValidationResponse,
)
from callvault.errors import error_responses
from callvault.runtime import Runtime

router = APIRouter(
    prefix="/v2/custom_storage_credentials",
    tags=["Custom Storage Credentials"],
    responses=error_responses(401, 404, 422),
)

ConnectionId = Annotated[
    str,
    Path(
        description="The id of one of your Call Control applications.",
        examples=["1684641123236054244"],
    ),
]

MASKING_NOTE = (
    " Secrets (aws_secret_access_key, account_key, sas_token, gcs credentials) are answered "
    "masked: all but their last 4 characters replaced by '*'."
)


@router.post(
    "/{connection_id}",
    response_model=CredentialsResponse,
    # the fields of the other credentials form (role_arn or keys) are left out, not null
    response_model_exclude_none=True,
    operation_id="CreateCustomStorageCredentials",
    summary="Create a custom storage credential",
    description="Stores the connection's storage settings. A connection has at most one: "
    "when it has one already the answer is 409 (replace it with PUT)." + MASKING_NOTE,
    responses=error_responses(400, 409),
)
async def create_credentials(
    connection_id: ConnectionId,
    body: CredentialsRequest,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CredentialsResponse:
    return await service.create(runtime, account.id, connection_id, body)


@router.get(
    "/{connection_id}",
    response_model=CredentialsResponse,
    # the fields of the other credentials form (role_arn or keys) are left out, not null
    response_model_exclude_none=True,
    operation_id="GetCustomStorageCredentials",
    summary="Retrieve a stored credential",
    description="The connection's storage settings." + MASKING_NOTE,
)
async def retrieve_credentials(
    request: Request, connection_id: ConnectionId, account: Account = Depends(current_account)
) -> Response:
    # rendered once per change of the credentials (response_model above is the schema); the
    # runtime read off the request, not as one more dependency: this GET is the hot one
    body = await service.retrieve_rendered(runtime_of(request), account.id, connection_id)
    return Response(body, media_type="application/json")


@router.put(
    "/{connection_id}",
    response_model=CredentialsResponse,
    # the fields of the other credentials form (role_arn or keys) are left out, not null
    response_model_exclude_none=True,
    operation_id="UpdateCustomStorageCredentials",
    summary="Update a stored credential",
    description="Replaces the whole configuration (404 when there is none yet). A secret "
    "field sent back exactly as GET masked it keeps the stored secret. Recordings kept in "
    "the default store after a permanent failure are retried with the new settings." + MASKING_NOTE,
    responses=error_responses(400),
)
async def replace_credentials(
    connection_id: ConnectionId,
    body: CredentialsRequest,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> CredentialsResponse:
    return await service.replace(runtime, account.id, connection_id, body)


@router.delete(
    "/{connection_id}",
    status_code=204,
    response_class=Response,
    operation_id="DeleteCustomStorageCredentials",
    summary="Delete a stored credential",
    description="New recordings of the connection then stay in the default store.",
    responses={204: {"description": "Deleted."}},
)
async def delete_credentials(
    connection_id: ConnectionId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> Response:
    await service.delete(runtime, account.id, connection_id)
    return Response(status_code=204)


@router.post(
    "/{connection_id}/actions/validate",
    response_model=ValidationResponse,
    response_model_exclude_none=True,
    operation_id="ValidateCustomStorageCredentials",
    summary="Check the stored credentials against the live store",
    description="Writes, reads back and deletes a small probe object with the stored "
    "settings. A failed probe is still a 200, with `status` `failed` and the reason in "
    "`detail`.",
)
async def validate_credentials(
    connection_id: ConnectionId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> ValidationResponse:
    return ValidationResponse(data=await service.validate(runtime, account.id, connection_id))


@router.get(
    "/{connection_id}/aws_role_setup",
    response_model=AwsRoleSetupResponse,
    operation_id="GetAwsRoleSetup",
    summary="What to set up in AWS for keyless access (callvault extension)",
    description="The ExternalId callvault generated for this connection, callvault's AWS "
    "principal, the IAM role trust policy to paste and the least-privilege bucket policy. "
    "Works before any credentials exist; then save credentials with `role_arn` instead of "
    "access keys.",
    responses=error_responses(503),
)
async def aws_role_setup(
    connection_id: ConnectionId,
    bucket: Annotated[
        str | None,
        Query(description="The bucket, filled into the permissions policy.", max_length=63),
    ] = None,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> AwsRoleSetupResponse:
    return AwsRoleSetupResponse(
        data=await service.aws_role_setup(runtime, account.id, connection_id, bucket)
    )
