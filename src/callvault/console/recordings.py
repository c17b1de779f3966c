"""What the console's recording pages need beyond the Recordings API: where the bytes are, and
the audio itself, streamed through the console so the player never leaves the origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from callvault.credentials.service import load_configuration
from callvault.errors import ApiError, Code, ErrorItem, not_found
from callvault.recordings import repository
from callvault.recordings.audio import SNIFF_BYTES, looks_like_stored_audio
from callvault.recordings.models import Recording
from callvault.recordings.schemas import RecordingData
from callvault.recordings.service import get_recording, in_custom_storage
from callvault.runtime import Runtime
from callvault.storage.base import ObjectStore, StorageError
from callvault.storage.factory import open_custom_store
from callvault.storage.layout import content_type_for

AUDIO_TIMEOUT_SECS = 30


@dataclass(frozen=True)
class RecordingDetail:
    data: RecordingData  # exactly what GET /v2/recordings/{id} answers
    row: Recording  # placement, attempts, errors


async def recording_detail(runtime: Runtime, account_id: str, recording_id: str) -> RecordingDetail:
    data = await get_recording(runtime, account_id, recording_id)  # the API's 404 rules
    async with runtime.sessions() as session:
        row = await repository.live_for_account(session, account_id, data.id)
    if row is None:
        raise not_found(parameter="recording_id")
    return RecordingDetail(data, row)


@dataclass(frozen=True)
class Audio:
    chunks: AsyncIterator[bytes]
    content_type: str


async def _store_and_key(runtime: Runtime, row: Recording) -> tuple[ObjectStore, str]:
    if in_custom_storage(row) and row.object_key and row.bucket and row.backend:
        async with runtime.sessions() as session:
            stored = await load_configuration(session, runtime.settings.keyring, row.connection_id)
        if stored is None:
            raise _unavailable("the connection's storage credentials were deleted")
        store = open_custom_store(
            row.backend,
            {**stored.configuration, "bucket": row.bucket},
            timeout_secs=AUDIO_TIMEOUT_SECS,
            allow_private_networks=runtime.settings.allow_private_networks,
        )
        return store, row.object_key
    if row.default_store_key:
        return runtime.default_store, row.default_store_key
    raise not_found(parameter="recording_id")


def _unavailable(reason: str) -> ApiError:
    return ApiError(
        502,
        [
            ErrorItem(
                Code.UPSTREAM_FAILED, "Bad gateway", f"The audio could not be fetched: {reason}"
            )
        ],
    )


async def _leading(stream: AsyncIterator[bytes]) -> bytes:
    """At least SNIFF_BYTES from the start of `stream` (fewer only when it is that short)."""
    first = b""
    while len(first) < SNIFF_BYTES:
        chunk = await anext(stream, b"")
        if not chunk:
            break
        first += chunk
    return first


async def audio(runtime: Runtime, account_id: str, recording_id: str) -> Audio:
    """The recording's bytes from wherever they are (default store or the customer's bucket,
    read with the stored credentials); a store failure answers 502 with its reason."""
    detail = await recording_detail(runtime, account_id, recording_id)
    try:
        store, key = await _store_and_key(runtime, detail.row)
        stream = store.get_stream(key)
        first = await _leading(stream)  # a failure shows before the answer starts
    except StorageError as exc:
        raise _unavailable(exc.reason) from None
    encrypted = detail.row.encryption_details is not None
    if not looks_like_stored_audio(first, detail.row.format, encrypted=encrypted):
        raise _unavailable("the stored object is not this recording's audio")

    async def chunks() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in stream:
            yield chunk

    return Audio(chunks(), content_type_for(detail.row.format))
