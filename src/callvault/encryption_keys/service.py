"""Recording encryption keys: register, read, list, delete, always within one account; and the
key a connection's recordings are encrypted for at ingest."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.db import transaction, utcnow
from callvault.encryption_keys import repository
from callvault.encryption_keys.models import RecordingEncryptionKey
from callvault.encryption_keys.schemas import (
    CreateRecordingEncryptionKeyRequest,
    RecordingEncryptionKeyData,
    RecordingEncryptionKeyList,
)
from callvault.encryption_keys.scheme import KeyRefused, parse_public_key
from callvault.errors import conflict, invalid, not_found
from callvault.pagination import PaginationMeta
from callvault.runtime import Runtime

log = structlog.get_logger("callvault.encryption_keys")


async def get_owned(session: AsyncSession, account_id: str, key_id: str) -> RecordingEncryptionKey:
    """The account's key, or 404 (also when it belongs to another account)."""
    key = await repository.for_account(session, account_id, key_id)
    if key is None:
        raise not_found()
    return key


async def check_usable(session: AsyncSession, account_id: str, key_id: str | None) -> None:
    """422 at the application's field unless the key exists in the same account."""
    if key_id is None:
        return
    if await repository.for_account(session, account_id, key_id) is None:
        raise invalid(
            "recording_encryption_key_id: no recording encryption key with this id",
            pointer="/recording_encryption_key_id",
        )


async def create(
    runtime: Runtime, account_id: str, request: CreateRecordingEncryptionKeyRequest
) -> RecordingEncryptionKey:
    try:
        public_key = parse_public_key(request.public_key)
    except KeyRefused as exc:
        # the reason only: never the submitted text (it may be a private key)
        log.info("recording encryption key refused", reason=str(exc))
        raise invalid(f"public_key: {exc}", pointer="/public_key") from None
    key = RecordingEncryptionKey(
        id=str(uuid.uuid4()),
        account_id=account_id,
        name=request.name,
        public_key_pem=public_key.pem,
        fingerprint=public_key.fingerprint,
        key_size=public_key.key_size,
        created_at=utcnow(),
    )
    async with transaction(runtime.sessions) as session:
        await repository.add(session, key)
    log.info("recording encryption key added", key_id=key.id, fingerprint=key.fingerprint)
    return key


async def retrieve(runtime: Runtime, account_id: str, key_id: str) -> RecordingEncryptionKey:
    async with runtime.sessions() as session:
        return await get_owned(session, account_id, key_id)


async def list_page(
    runtime: Runtime, account_id: str, page_number: int, page_size: int
) -> RecordingEncryptionKeyList:
    offset = (page_number - 1) * page_size
    items: list[RecordingEncryptionKey] = []
    async with runtime.sessions() as session:
        total = await repository.count(session, account_id)
        if offset < total:
            items = list(await repository.page(session, account_id, offset=offset, limit=page_size))
    return RecordingEncryptionKeyList(
        data=[RecordingEncryptionKeyData.of(item) for item in items],
        meta=PaginationMeta.of(page_number, page_size, total),
    )


def _in_use(application_ids: list[str]) -> Exception:
    return conflict(
        "The key is used by call control application(s) "
        f"{', '.join(sorted(application_ids))}: set their recording_encryption_key_id to "
        "another key or null first. Recordings already encrypted for it stay decryptable "
        "with its private key."
    )


async def delete(runtime: Runtime, account_id: str, key_id: str) -> RecordingEncryptionKey:
    try:
        async with transaction(runtime.sessions) as session:
            key = await get_owned(session, account_id, key_id)
            using = await repository.applications_using(session, key.id)
            if using:
                raise _in_use(using)
            await repository.delete(session, key)
    except IntegrityError:
        # an application took the key between the check and the delete (foreign key)
        async with runtime.sessions() as session:
            raise _in_use(await repository.applications_using(session, key_id)) from None
    log.info("recording encryption key deleted", key_id=key.id)
    return key
