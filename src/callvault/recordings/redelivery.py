"""Putting recordings back on the queue: after new credentials, or when the customer asks.

- `requeue_for_new_credentials`: failed recordings of the connection go back to `received`
  unless they failed under the very revision that is stored now; recordings waiting on a
  transient backoff are tried at once.
- `redeliver` (`POST /v2/recordings/{id}/actions/redeliver`): a recording that failed, or one
  kept in the default store, runs through the pipeline again: with custom storage configured it
  is copied there (`call.recording.saved` with the customer URL, the default-store copy is
  removed); without, a fresh `call.recording.saved` with a new link is sent. A recording in a
  customer bucket already (its staging copy is gone) or still in progress is not redeliverable.
"""

from __future__ import annotations

from dataclasses import dataclass

from callvault.db import transaction, utcnow
from callvault.errors import invalid, not_found
from callvault.recordings import repository as recordings
from callvault.recordings import transitions
from callvault.recordings.models import RecordingStatus
from callvault.runtime import Runtime


@dataclass(frozen=True)
class Redelivery:
    id: str
    status: str


async def requeue_for_new_credentials(
    runtime: Runtime, connection_id: str, *, created: bool = False
) -> int:
    """Returns how many failed recordings were put back (the worker is woken).

    `created`: the credentials are new (POST), so every earlier failure happened under other,
    deleted credentials; revisions restart with a new row and cannot tell them apart.
    """
    async with transaction(runtime.sessions) as session:
        revision = await recordings.current_revision(session, connection_id)
        if revision is None:  # deleted again meanwhile: nothing to retry with
            return 0
        count = await transitions.requeue_after_new_credentials(
            session, connection_id, None if created else revision, utcnow()
        )
    runtime.work_ready.set()
    return count


async def redeliver(runtime: Runtime, account_id: str, recording_id: str) -> Redelivery:
    """Queue the recording again; 404 for unknown or foreign ids, 422 when not redeliverable."""
    async with transaction(runtime.sessions) as session:
        recording = await recordings.live_for_account(
            session, account_id, recording_id, for_update=True
        )
        if recording is None:
            raise not_found(parameter="recording_id")
        if not await transitions.requeue_for_redelivery(session, recording.id, utcnow()):
            raise invalid(_not_redeliverable(recording.status), parameter="recording_id")
    runtime.work_ready.set()
    return Redelivery(id=recording.id, status=RecordingStatus.RECEIVED)


def _not_redeliverable(status: str) -> str:
    if status == RecordingStatus.RECEIVED:
        return "The recording is being stored right now; wait for its webhook."
    if status == RecordingStatus.STORED:
        return (
            "The recording is stored in custom storage already; only failed recordings and "
            "recordings kept in the default store can be redelivered."
        )
    return "The recording cannot be redelivered in its current state."
