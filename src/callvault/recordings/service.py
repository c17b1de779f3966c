"""The Recordings API: list, get, delete; and the download links every part hands out."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog

from callvault.db import transaction, utcnow
from callvault.errors import ApiError, ErrorItem, not_found
from callvault.recordings import repository
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.repository import RecordingFilter
from callvault.recordings.schemas import (
    PaginationMeta,
    RecordingData,
    RecordingList,
    StorageState,
)
from callvault.runtime import Runtime
from callvault.storage.base import StorageError

log = structlog.get_logger("callvault.recordings")

DOWNLOAD_LINK_SECONDS = 600  # as Telnyx's own presigned links (X-Amz-Expires=600)


def in_custom_storage(recording: Recording) -> bool:
    """Stored in the customer's bucket (the worker set its canonical URL)."""
    return recording.status == RecordingStatus.STORED and recording.recording_url is not None


async def download_urls_for(runtime: Runtime, recording: Recording) -> dict[str, str]:
    """`{"wav": url}` or `{"mp3": url}`: the customer-bucket URL once stored there, a fresh
    600 s signed default-store link while the bytes are in the default store, else `{}`.

    Also what the webhooks put in `recording_urls` for default-store recordings.
    """
    if recording.status == RecordingStatus.DELETED:
        return {}
    if in_custom_storage(recording):
        assert recording.recording_url is not None
        return {recording.format: recording.recording_url}
    if recording.default_store_key:
        url = await runtime.default_store.signed_get_url(
            recording.default_store_key, DOWNLOAD_LINK_SECONDS
        )
        return {recording.format: url}
    if recording.recording_url:
        return {recording.format: recording.recording_url}
    return {}


def storage_state(recording: Recording) -> StorageState:
    if recording.status == RecordingStatus.DELETED:
        return StorageState(state="deleted", location=None)
    custom = in_custom_storage(recording)
    return StorageState(
        state=recording.status,  # type: ignore[arg-type]
        location="custom" if custom else "default",
        backend=recording.backend if custom else None,
        error=recording.error_reason if recording.status == RecordingStatus.FAILED else None,
    )


async def to_data(runtime: Runtime, recording: Recording) -> RecordingData:
    return RecordingData(
        id=recording.id,
        call_control_id=recording.call_control_id,
        call_leg_id=recording.call_leg_id,
        call_session_id=recording.call_session_id,
        connection_id=recording.connection_id,
        channels=recording.channels,  # type: ignore[arg-type]
        format=recording.format,  # type: ignore[arg-type]
        created_at=recording.created_at,
        updated_at=recording.updated_at,
        recording_started_at=recording.recording_started_at,
        recording_ended_at=recording.recording_ended_at,
        duration_millis=recording.duration_millis,
        download_urls=await download_urls_for(runtime, recording),
        size_bytes=recording.size_bytes,
        sha256=recording.sha256,
        storage=storage_state(recording),
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


async def get_recording(runtime: Runtime, account_id: str, recording_id: str) -> RecordingData:
    if not _is_uuid(recording_id):
        raise not_found(parameter="recording_id")
    async with runtime.sessions() as session:
        recording = await repository.live_for_account(session, account_id, recording_id.lower())
    if recording is None:
        raise not_found(parameter="recording_id")
    return await to_data(runtime, recording)


async def list_recordings(
    runtime: Runtime, account_id: str, where: RecordingFilter, page_number: int, page_size: int
) -> RecordingList:
    where = RecordingFilter(
        connection_id=where.connection_id,
        call_leg_id=where.call_leg_id,
        call_control_id=where.call_control_id,
        call_session_id=where.call_session_id,
        created_at_gte=as_utc(where.created_at_gte),
        created_at_lte=as_utc(where.created_at_lte),
        status=where.status,
    )
    async with runtime.sessions() as session:
        rows, total = await repository.page_for_account(
            session, account_id, where, (page_number - 1) * page_size, page_size
        )
    return RecordingList(
        data=[await to_data(runtime, row) for row in rows],
        meta=PaginationMeta(
            page_number=page_number,
            page_size=page_size,
            total_pages=math.ceil(total / page_size),
            total_results=total,
        ),
    )


async def delete_recording(runtime: Runtime, account_id: str, recording_id: str) -> RecordingData:
    """Remove the default-store copy and mark the row deleted; 404 for unknown ids.

    The object is deleted inside the row's transaction: if the store fails, nothing changes
    and the client may retry; if the commit fails after it, a retry finds the object gone
    (deletes are idempotent) and commits. The customer's bucket is theirs: left alone.
    """
    if not _is_uuid(recording_id):
        raise not_found(parameter="recording_id")
    async with transaction(runtime.sessions) as session:
        recording = await repository.live_for_account(
            session, account_id, recording_id.lower(), for_update=True
        )
        if recording is None:
            raise not_found(parameter="recording_id")
        await _delete_from_default_store(runtime, recording)
    return await to_data(runtime, recording)


async def delete_recordings(runtime: Runtime, account_id: str, ids: Sequence[str]) -> None:
    """Bulk delete: ids that are not the account's live recordings are skipped."""
    wanted = sorted({i.lower() for i in ids if _is_uuid(i)})
    if not wanted:
        return
    async with transaction(runtime.sessions) as session:
        for recording_id in await repository.live_ids_for_account(session, account_id, wanted):
            recording = await repository.live_for_account(
                session, account_id, recording_id, for_update=True
            )
            if recording is not None:
                await _delete_from_default_store(runtime, recording)


async def _delete_from_default_store(runtime: Runtime, recording: Recording) -> None:
    if recording.default_store_key:
        try:
            await runtime.default_store.delete(recording.default_store_key)
        except StorageError as exc:
            log.warning("default store refused a delete", recording_id=recording.id)
            raise ApiError(
                503,
                [
                    ErrorItem(
                        "10011",
                        "Service unavailable",
                        f"The recording could not be deleted, try again: {exc.reason}",
                    )
                ],
            ) from None
    recording.status = RecordingStatus.DELETED
    recording.default_store_key = None
    recording.next_attempt_at = None
    recording.lease_owner = None
    recording.lease_until = None
    recording.updated_at = utcnow()
    log.info("recording deleted", recording_id=recording.id)
