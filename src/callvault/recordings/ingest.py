"""Ingest: a received upload becomes a durable object in the default store and a row.

The contract with the worker: the row is committed with status `received`,
`next_attempt_at=now` and `default_store_key` set, and only then is `work_ready` set and the
media server answered 202. The worker does the rest (custom storage, webhooks).

Idempotency: (connection_id, call_leg_id, recording_started_at) names a recording. A repeat is
answered with the existing row (200) and stores nothing; two concurrent first sends race on the
table's unique constraint and the loser answers with the winner's row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import IntegrityError

from callvault import metrics
from callvault.db import database_unavailable, transaction, utcnow
from callvault.encryption_keys import scheme as encryption
from callvault.errors import (
    ApiError,
    conflict,
    database_unavailable_error,
    insufficient_storage,
    invalid,
    unavailable,
)
from callvault.recordings import repository
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.schemas import IngestMetadata
from callvault.recordings.upload import ReceivedUpload
from callvault.runtime import Runtime
from callvault.storage.base import StorageError
from callvault.storage.layout import content_type_for, extension_for, object_key

log = structlog.get_logger("callvault.ingest")


@dataclass(frozen=True)
class IngestOutcome:
    recording_id: str
    status: str
    created: bool  # False: a repeat of a recording already accepted


# what stores and the OS say when there is no room left (ENOSPC, EDQUOT, S3's 507 / quota)
_FULL_MARKERS = (
    "no space left",
    "disk quota exceeded",
    "insufficient storage",
    "storage full",
    "quotaexceeded",
    "entitytoolarge",
)


def storage_full(text: str) -> bool:
    """Whether a store's or the OS's reason says it is out of space (pure)."""
    lowered = text.lower().replace(" ", "")
    return any(marker.replace(" ", "") in lowered for marker in _FULL_MARKERS)


def no_space(what: str) -> ApiError:
    return insufficient_storage(
        f"The recording could not be stored: {what} is out of space. "
        "Nothing was kept; send it again once space is available."
    )


def store_unavailable(error: StorageError) -> ApiError:
    if storage_full(error.reason):
        return no_space("the default store")
    return unavailable(f"The recording could not be stored, try again: {error.reason}")


def object_metadata(recording_id: str, upload: ReceivedUpload) -> dict[str, str]:
    meta = upload.metadata
    return {
        "recording_id": recording_id,
        "connection_id": meta.connection_id,
        "call_control_id": meta.call_control_id,
        "call_leg_id": meta.call_leg_id,
        "call_session_id": meta.call_session_id,
        "sha256": upload.sha256,
        # encrypted_cek, iv, public_key_id: the object alone suffices to decrypt it
        **encryption.object_metadata(upload.encryption_details),
    }


async def ingest(runtime: Runtime, upload: ReceivedUpload) -> IngestOutcome:
    recording_id = str(uuid.uuid4())
    # every log line of this ingest names the recording and its connection
    with structlog.contextvars.bound_contextvars(
        recording_id=recording_id, connection_id=upload.metadata.connection_id
    ):
        return await _ingest(runtime, upload, recording_id)


async def _ingest(runtime: Runtime, upload: ReceivedUpload, recording_id: str) -> IngestOutcome:
    meta = upload.metadata
    # reads only: a plain session takes no write lock (the insert below is its own transaction)
    async with runtime.sessions() as session:
        account_id = await repository.application_account_id(session, meta.connection_id)
        if account_id is None:
            raise invalid(
                "No Call Control application has this connection_id.",
                pointer="/metadata/connection_id",
            )
        existing = await repository.by_natural_key(
            session, meta.connection_id, meta.call_leg_id, meta.recording_started_at
        )
        if existing is not None:
            log.info("recording received again", recording_id=existing.id)
            return IngestOutcome(existing.id, existing.status, created=False)
        key = default_store_key(account_id, meta)
        if await repository.default_key_in_use(session, key):
            # another recording of this leaf started in the same second (a reused
            # custom_file_name, or a quick stop/start): never overwrite its bytes
            key = default_store_key(account_id, meta, disambiguator=recording_id[:8])

    try:
        await runtime.default_store.put_file(
            key,
            upload.path,
            content_type=encryption.stored_content_type(
                content_type_for(meta.format), upload.encryption_details
            ),
            metadata=object_metadata(recording_id, upload),
        )
    except StorageError as exc:
        log.warning("default store refused a recording", reason=exc.reason)
        raise store_unavailable(exc) from None

    now = utcnow()
    recording = Recording(
        id=recording_id,
        account_id=account_id,
        connection_id=meta.connection_id,
        call_control_id=meta.call_control_id,
        call_leg_id=meta.call_leg_id,
        call_session_id=meta.call_session_id,
        format=meta.format,
        channels=meta.channels,
        recording_started_at=meta.recording_started_at,
        recording_ended_at=meta.recording_ended_at,
        client_state=meta.client_state,
        custom_file_name=meta.custom_file_name,
        from_number=meta.from_,
        to_number=meta.to,
        conference_id=meta.conference_id,
        conference_region=meta.conference_region,
        initiated_by=meta.initiated_by,
        sip_call_id=meta.sip_call_id,
        source=meta.source,
        size_bytes=upload.size,
        sha256=upload.sha256,
        duration_millis=upload.audio.duration_millis,
        encryption_details=upload.encryption_details,
        status=RecordingStatus.RECEIVED,
        default_store_key=key,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    committing = False  # True once the row is flushed: a failure from there on is the commit
    try:
        async with transaction(runtime.sessions) as session:
            await repository.add(session, recording)
            committing = True
    except IntegrityError:
        return await _lost_race(runtime, upload, key)
    except Exception as exc:
        if not database_unavailable(exc):
            await _forget_object(runtime, key)
            raise
        # never 202 without a committed row; never a 500 for an outage: 503 + Retry-After
        if not committing or not await _committed_after_all(runtime, recording_id):
            await _forget_object(runtime, key)
        log.warning("database unavailable: ingest refused", error_type=type(exc).__name__)
        raise database_unavailable_error() from None
    except BaseException:
        await _forget_object(runtime, key)
        raise

    runtime.work_ready.set()
    metrics.RECORDINGS_INGESTED.inc()
    metrics.RECORDING_BYTES_INGESTED.inc(upload.size)
    log.info(
        "recording received",
        recording_id=recording_id,
        connection_id=meta.connection_id,
        format=meta.format,
        size_bytes=upload.size,
        duration_millis=upload.audio.duration_millis,
    )
    return IngestOutcome(recording_id, RecordingStatus.RECEIVED, created=True)


def default_store_key(account_id: str, meta: IngestMetadata, disambiguator: str = "") -> str:
    """The layout's key; the disambiguator (part of the recording id) only when it is taken."""
    leaf = meta.custom_file_name or meta.call_leg_id
    if disambiguator:
        leaf = f"{leaf}-{disambiguator}"
    return object_key(account_id, meta.recording_started_at, leaf, extension_for(meta.format))


async def _lost_race(runtime: Runtime, upload: ReceivedUpload, key: str) -> IngestOutcome:
    """The same recording was committed concurrently: answer with that row."""
    meta = upload.metadata
    async with runtime.sessions() as session:
        existing = await repository.by_natural_key(
            session, meta.connection_id, meta.call_leg_id, meta.recording_started_at
        )
    if existing is None:
        # the constraint was another one (e.g. the account vanished): nothing to answer with
        await _forget_object(runtime, key)
        raise conflict("The recording was not stored.")
    if existing.default_store_key != key:
        await _forget_object(runtime, key)
    return IngestOutcome(existing.id, existing.status, created=False)


async def _committed_after_all(runtime: Runtime, recording_id: str) -> bool:
    """The connection failed during COMMIT: did the row land? When that cannot be told (the
    database still away), the object is kept: better an unreferenced object (overwritten by
    the media server's retry, same key) than a committed row whose bytes were deleted."""
    try:
        async with runtime.sessions() as session:
            return await session.get(Recording, recording_id) is not None
    except Exception:
        return True


async def _forget_object(runtime: Runtime, key: str) -> None:
    try:
        await runtime.default_store.delete(key)
    except StorageError as exc:
        log.warning("could not remove an unreferenced default-store object", reason=exc.reason)
