"""HTTP layer of /v2/recording_encryption_keys (ours; scheme: docs/encryption.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from callvault.accounts.models import Account
from callvault.auth import current_account, get_runtime
from callvault.encryption_keys import service
from callvault.encryption_keys.schemas import (
    CreateRecordingEncryptionKeyRequest,
    RecordingEncryptionKeyData,
    RecordingEncryptionKeyList,
    RecordingEncryptionKeyResponse,
)
from callvault.errors import error_responses
from callvault.runtime import Runtime

router = APIRouter(
    prefix="/v2/recording_encryption_keys",
    tags=["Recording Encryption Keys"],
    responses=error_responses(401, 422),
)

KeyId = Annotated[str, Path(alias="id", description="Identifies the key.")]


@router.post(
    "",
    status_code=201,
    response_model=RecordingEncryptionKeyResponse,
    operation_id="CreateRecordingEncryptionKey",
    summary="Register an RSA public key that recordings can be encrypted for",
    responses=error_responses(400),
)
async def create_key(
    body: CreateRecordingEncryptionKeyRequest,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingEncryptionKeyResponse:
    key = await service.create(runtime, account.id, body)
    return RecordingEncryptionKeyResponse(data=RecordingEncryptionKeyData.of(key))


@router.get(
    "",
    response_model=RecordingEncryptionKeyList,
    operation_id="ListRecordingEncryptionKeys",
    summary="List recording encryption keys (newest first)",
)
async def list_keys(
    page_number: Annotated[int, Query(alias="page[number]", ge=1)] = 1,
    page_size: Annotated[int, Query(alias="page[size]", ge=1, le=250)] = 20,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingEncryptionKeyList:
    return await service.list_page(runtime, account.id, page_number, page_size)


@router.get(
    "/{id}",
    response_model=RecordingEncryptionKeyResponse,
    operation_id="RetrieveRecordingEncryptionKey",
    summary="Retrieve a recording encryption key",
    responses=error_responses(404),
)
async def retrieve_key(
    key_id: KeyId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingEncryptionKeyResponse:
    key = await service.retrieve(runtime, account.id, key_id)
    return RecordingEncryptionKeyResponse(data=RecordingEncryptionKeyData.of(key))


@router.delete(
    "/{id}",
    response_model=RecordingEncryptionKeyResponse,
    operation_id="DeleteRecordingEncryptionKey",
    summary="Delete a recording encryption key (409 while an application uses it)",
    description="Answers the deleted key. Recordings already encrypted for it are unchanged.",
    responses=error_responses(404, 409),
)
async def delete_key(
    key_id: KeyId,
    account: Account = Depends(current_account),
    runtime: Runtime = Depends(get_runtime),
) -> RecordingEncryptionKeyResponse:
    key = await service.delete(runtime, account.id, key_id)
    return RecordingEncryptionKeyResponse(data=RecordingEncryptionKeyData.of(key))
