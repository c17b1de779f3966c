"""The Recordings API: list, get, delete; and the download links every part hands out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from callvault.credentials.service import load_configuration
from callvault.db import transaction
from callvault.errors import not_found, unavailable
from callvault.ids import is_uuid
from callvault.recordings import repository, transitions
from callvault.recordings.lifecycle import Event, change
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.repository import RecordingFilter
from callvault.recordings.schemas import (
    PaginationMeta,
    RecordingData,
    RecordingList,
    StorageState,
)
from callvault.runtime import Runtime
from callvault.storage.base import ObjectStore, StorageError
from callvault.storage.factory import open_custom_store

log = structlog.get_logger("callvault.recordings")

DOWNLOAD_LINK_SECONDS = 600  # as Telnyx's own presigned links (X-Amz-Expires=600)


class Placement(Protocol):
    """Where a recording's bytes are, as its columns say: a Recording, or the part of one a
    webhook delivery reads (webhooks/repository.py)."""

    id: str
    status: str
    recording_url: str | None
    default_store_key: str | None


def in_custom_storage(recording: Placement) -> bool:
    """Stored in the customer's bucket (the worker set its canonical URL)."""
    return recording.status == RecordingStatus.STORED and recording.recording_url is not None


def in_default_store(recording: Placement) -> bool:
    """Its bytes are in the default store only (not, or not yet, in the customer's bucket)."""
    return not in_custom_storage(recording) and recording.default_store_key is not None


async def default_store_link(runtime: Runtime, recording: Placement) -> str | None:
    """A fresh 600 s link to the default-store copy (the one the Recordings API hands out):
    what a `call.recording.saved` webhook sends for a recording in the default store, made
    anew for every delivery attempt. None when the recording is elsewhere or deleted, or when
    no link can be made right now."""
    key = recording.default_store_key
    if recording.status == RecordingStatus.DELETED or not in_default_store(recording) or not key:
        return None
    try:
        return await runtime.default_store.signed_get_url(key, DOWNLOAD_LINK_SECONDS)
    except StorageError as exc:
        log.warning("no download link", recording_id=recording.id, detail=exc.reason)
        return None


class CustomerLinks:
    """Presigned GET links into customers' buckets, made with the connection's stored
    credentials through the store interface (S3 SigV4, GCS V4, Azure SAS: each provider's own
    `signed_get_url`). One per API request: a listing opens each connection's store once."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stores: dict[str, ObjectStore | None] = {}

    async def _store_for(self, recording: Recording) -> ObjectStore | None:
        connection_id = recording.connection_id
        if connection_id not in self._stores:
            self._stores[connection_id] = await self._open(connection_id)
        store = self._stores[connection_id]
        # credentials replaced with another bucket or backend since: nothing to sign with
        if store is None or store.backend != recording.backend or store.bucket != recording.bucket:
            return None
        return store

    async def _open(self, connection_id: str) -> ObjectStore | None:
        async with self.runtime.sessions() as session:
            stored = await load_configuration(session, self.runtime.settings.keyring, connection_id)
        if stored is None:
            return None
        try:
            return open_custom_store(
                stored.backend,
                stored.configuration,
                allow_private_networks=self.runtime.settings.allow_private_networks,
            )
        except StorageError as exc:
            log.warning("cannot open the customer's store", detail=exc.reason)
            return None

    async def link(self, recording: Recording) -> str | None:
        store = await self._store_for(recording)
        if store is None or not recording.object_key:
            return None
        try:
            return await store.signed_get_url(recording.object_key, DOWNLOAD_LINK_SECONDS)
        except (StorageError, ValueError) as exc:
            log.warning(
                "cannot sign a customer-bucket link", recording_id=recording.id, detail=str(exc)
            )
            return None


async def download_urls_for(
    runtime: Runtime, recording: Recording, links: CustomerLinks | None = None
) -> dict[str, str]:
    """`{"wav": url}` or `{"mp3": url}`: always a link a plain GET downloads, valid 600 s — a
    presigned URL into the customer's bucket once stored there, a signed default-store link
    while the bytes are in the default store; `{}` when deleted or when no link can be made
    (the connection's credentials were deleted or now point at another bucket).

    Also what the webhooks put in `recording_urls` for default-store recordings (for custom
    storage they send the canonical URL, `recording.recording_url`).
    """
    if recording.status == RecordingStatus.DELETED:
        return {}
    if in_custom_storage(recording):
        link = await (links or CustomerLinks(runtime)).link(recording)
        return {recording.format: link} if link else {}
    if recording.default_store_key:
        url = await runtime.default_store.signed_get_url(
            recording.default_store_key, DOWNLOAD_LINK_SECONDS
        )
        return {recording.format: url}
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
        detail=recording.error_detail if recording.status == RecordingStatus.FAILED else None,
    )


async def to_data(
    runtime: Runtime, recording: Recording, links: CustomerLinks | None = None
) -> RecordingData:
    data = RecordingData(
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
        download_urls=await download_urls_for(runtime, recording, links),
        source=recording.source,  # type: ignore[arg-type]
        conference_id=recording.conference_id,
        to=recording.to_number,
        initiated_by=recording.initiated_by,
        size_bytes=recording.size_bytes,
        sha256=recording.sha256,
        storage=storage_state(recording),
        encryption_details=recording.encryption_details,  # type: ignore[arg-type]
    )
    data.from_ = recording.from_number  # "from" on the wire
    return data


async def get_recording(runtime: Runtime, account_id: str, recording_id: str) -> RecordingData:
    if not is_uuid(recording_id):
        raise not_found(parameter="recording_id")
    async with runtime.sessions() as session:
        recording = await repository.live_for_account(session, account_id, recording_id.lower())
    if recording is None:
        raise not_found(parameter="recording_id")
    return await to_data(runtime, recording)


async def list_recordings(
    runtime: Runtime, account_id: str, where: RecordingFilter, page_number: int, page_size: int
) -> RecordingList:
    links = CustomerLinks(runtime)
    async with runtime.sessions() as session:
        rows, total = await repository.page_for_account(
            session, account_id, where, (page_number - 1) * page_size, page_size
        )
    return RecordingList(
        data=[await to_data(runtime, row, links) for row in rows],
        meta=PaginationMeta.of(page_number, page_size, total),
    )


async def delete_recording(runtime: Runtime, account_id: str, recording_id: str) -> RecordingData:
    """Remove the default-store copy and mark the row deleted; 404 for unknown ids.

    The object is deleted inside the row's transaction: if the store fails, nothing changes
    and the client may retry; if the commit fails after it, a retry finds the object gone
    (deletes are idempotent) and commits. The customer's bucket is theirs: left alone.
    """
    if not is_uuid(recording_id):
        raise not_found(parameter="recording_id")
    async with transaction(runtime.sessions) as session:
        recording = await repository.live_for_account(
            session, account_id, recording_id.lower(), for_update=True
        )
        if recording is None:
            raise not_found(parameter="recording_id")
        await _delete_from_default_store(runtime, recording)
    return await to_data(runtime, recording)


DELETE_BATCH = 250  # recordings per transaction of a bulk delete


async def delete_recordings(runtime: Runtime, account_id: str, ids: Sequence[str]) -> None:
    """Bulk delete: ids that are not the account's live recordings are skipped. Any number of
    ids (the spec sets no maximum), in batches of DELETE_BATCH, one transaction each: a failure
    (503) leaves earlier batches deleted and the call can simply be repeated (idempotent)."""
    wanted = sorted({i.lower() for i in ids if is_uuid(i)})
    for start in range(0, len(wanted), DELETE_BATCH):
        batch = wanted[start : start + DELETE_BATCH]
        async with transaction(runtime.sessions) as session:
            for recording_id in await repository.live_ids_for_account(session, account_id, batch):
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
            raise unavailable(
                f"The recording could not be deleted, try again: {exc.reason}"
            ) from None
    transitions.apply_to(recording, change(recording.status, Event.DELETED))
    log.info("recording deleted", recording_id=recording.id)
