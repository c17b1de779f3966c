"""One recording through the pipeline: resolve its target, copy, verify, record the outcome.
`RecordingJobs` is the recording job kind the entry point gives the worker (callvault/jobs.py).

Each state change (recordings/lifecycle.py) is one transaction, and the webhook event its
transition emits is made inside it (`_commit_move`), so the row and its event can never
disagree. The outcomes ready at the same moment share that transaction
(group commit, batch_writer.py: one fsync for all; each rerun alone if the batch fails).
The order, and what a crash at each point leaves behind:

1. claimed (lease) — crash: the lease expires, another worker takes the row.
2. put + head in the customer's bucket — crash: same; the put is repeated (same key, same
   bytes: idempotent).
3. commit: status `stored` + placement + `call.recording.saved` event (leased to this worker, so
   it is sent right away without another claim) — crash: the event's lease expires and any
   worker sends it; the staging copy is swept (4).
4. then delete the default-store copy, and clear `default_store_key` (lifecycle: staging copy
   removed) with the next commit, usually the event's delivery record (batch_writer.defer) —
   crash: `sweep_staging_copies` (run by every worker at start and every minute) finds stored
   custom-storage rows that still name a staging key and finishes the job; both steps are
   idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog
from sqlalchemy.orm import Session

from callvault.applications.models import Application
from callvault.credentials.held import HeldCredentials
from callvault.credentials.service import StoredCredentials
from callvault.db import database_unavailable, transaction, utcnow
from callvault.encryption_keys import scheme as encryption
from callvault.generation import generation_reader
from callvault.metrics import DELETED_DURING_UPLOAD, JOB_CRASHES, UPLOAD_SECONDS, UPLOADS
from callvault.recordings import repository, transitions
from callvault.recordings import retry_policy as policy
from callvault.recordings.handoffs import EVENT_JOB, NewRecording
from callvault.recordings.lifecycle import Change, Event, Webhook, change
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.service import default_store_link
from callvault.runtime import Crew, Runtime
from callvault.scratch import temp_path
from callvault.storage import layout
from callvault.storage.base import ObjectStore, StorageError, StorageErrorKind, redact
from callvault.storage.factory import open_custom_store
from callvault.webhooks import service as webhooks
from callvault.webhooks.models import WebhookEvent
from callvault.webhooks.repository import DeliveryContext

log = structlog.get_logger("callvault.worker")

STORE_CACHE_SIZE = 64
# A remote default store's copy up to this size is uploaded from memory (default_store_copy).
# Held once per upload slot (64 MiB at the default 8): below a multipart put's 4 x 5 MiB parts.
IN_MEMORY_LIMIT = 8 * 1024 * 1024


@dataclass
class UploadContext:
    """What processing needs from its worker."""

    runtime: Runtime
    owner: str
    lease_seconds: float
    rng: random.Random = field(default_factory=random.Random)
    # open custom stores by (connection, digest of the configuration): clients and connections
    # are reused, and a changed configuration is never served from the cache (revisions alone
    # restart when credentials are deleted and created again)
    stores: OrderedDict[tuple[str, str], ObjectStore] = field(default_factory=OrderedDict)
    # the decrypted settings per connection while the credentials generation is unchanged
    credentials: HeldCredentials = field(init=False)

    def __post_init__(self) -> None:
        self.credentials = HeldCredentials(
            generation_reader(self.runtime), self.runtime.settings.keyring
        )

    def lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_seconds)

    def store_for(self, connection_id: str, credentials: StoredCredentials) -> ObjectStore:
        fingerprint = hashlib.sha256(
            json.dumps([credentials.backend, credentials.configuration], sort_keys=True).encode()
        ).hexdigest()
        cache_key = (connection_id, fingerprint)
        store = self.stores.get(cache_key)
        if store is None:
            store = open_custom_store(
                credentials.backend,
                credentials.configuration,
                allow_private_networks=self.runtime.settings.allow_private_networks,
            )
            self.stores[cache_key] = store
            while len(self.stores) > STORE_CACHE_SIZE:
                self.stores.popitem(last=False)
        else:
            self.stores.move_to_end(cache_key)
        return store


@dataclass(frozen=True)
class Outcome:
    event_id: str | None = None  # a webhook event this worker holds, to send now
    staging_key: str | None = None  # a default-store copy to delete after that
    # the event's round from memory (a handed-over recording: application and account known)
    delivery: DeliveryContext | None = None


class Retry(Exception):
    """A failure that is worth another try (a transient StorageError, a failed verification)."""


async def process_recording(
    ctx: UploadContext, recording_id: str, new: NewRecording | None = None
) -> Outcome:
    """Move one claimed recording to its final place; never raises for storage failures.

    `new`: a recording ingest handed over in memory (written leased to this worker): not
    read again."""
    runtime = ctx.runtime
    try:
        # reads only (every later change is conditional on the lease): no write lock
        async with runtime.sessions() as session:
            if new is None:
                # claimed: the row with its application and account, in one read
                found = await repository.recording_job(session, recording_id)
                if found is not None and found[1] is not None:
                    new = NewRecording(found[0], found[1], found[2])
                recording: Recording | None = found[0] if found is not None else None
            else:
                recording = new.recording
            if (
                recording is None
                or recording.status != RecordingStatus.RECEIVED
                or recording.lease_owner != ctx.owner
            ):
                return Outcome()
            credentials = await ctx.credentials.load(session, recording.connection_id)
    except Exception as exc:  # e.g. a sealed configuration no active key opens
        log.error("loading credentials failed", recording_id=recording_id, error=type(exc).__name__)
        return await _retry_later(ctx, recording_id, None, f"internal error: {type(exc).__name__}")

    with structlog.contextvars.bound_contextvars(connection_id=recording.connection_id):
        if credentials is None:
            return await _finish_in_default_store(ctx, recording)
        return await _upload_to_custom(ctx, recording, credentials, new)


async def _finish_in_default_store(ctx: UploadContext, recording: Recording) -> Outcome:
    link = await default_store_link(ctx.runtime, recording) or ""
    move = change(recording.status, Event.STORED_DEFAULT)
    event = await _commit_move(ctx, recording, move, recording_url=link)
    if event is False:
        return Outcome()
    log.info("recording stored", recording_id=recording.id, location="default")
    return Outcome(event_id=event.id if event else None)


async def _commit_move(
    ctx: UploadContext,
    recording: Recording,
    move: Change,
    *,
    recording_url: str = "",
    application: Application | None = None,
) -> WebhookEvent | Literal[False] | None:
    """Write a move of a held recording and make the webhook its transition emits, in one
    transaction shared with the outcomes ready at the same time (group commit,
    batch_writer.py). False: the move was not made (the lease was lost, or the row deleted);
    None: made, no event (the application is gone)."""
    held = HeldMove(recording, ctx.owner, move, ctx.lease_until(), recording_url, application)
    return await ctx.runtime.batch_writer.run(held)


@dataclass(frozen=True)
class HeldMove:
    """A held recording's move and the event its transition emits: a group-commit unit,
    written together with the other moves of its batch (batch_writer.Joinable). The event is
    leased to this worker: it sends it right after the commit."""

    recording: Recording
    owner: str
    move: Change
    lease_until: datetime
    recording_url: str = ""
    application: Application | None = None

    def __call__(self, session: Session) -> WebhookEvent | Literal[False] | None:
        return self.write_together(session, [self])[0]

    @classmethod
    def write_together(
        cls, session: Session, moves: list[HeldMove]
    ) -> list[WebhookEvent | Literal[False] | None]:
        """The moves (transitions.apply_held_many: one SELECT of the holders, one UPDATE per
        kind of move), then one INSERT of every event the held ones emit."""
        held = transitions.apply_held_many(
            session, [(m.recording.id, m.owner, m.move) for m in moves]
        )
        emitting = [m for m, ok in zip(moves, held, strict=True) if ok and m.move.webhook]
        made = iter(webhooks.record_events(session, [m.new_event() for m in emitting]))
        results: list[WebhookEvent | Literal[False] | None] = []
        for move, ok in zip(moves, held, strict=True):
            if not ok:
                results.append(False)
            else:
                results.append(next(made) if move.move.webhook else None)
        return results

    def new_event(self) -> webhooks.NewEvent:
        error = None
        if self.move.webhook is Webhook.ERROR:
            values = self.move.values
            error = (str(values["error_reason"]), str(values["error_detail"]))
        return webhooks.NewEvent(
            self.recording,
            recording_url=self.recording_url,
            error=error,
            lease_owner=self.owner,
            lease_until=self.lease_until,
            application=self.application,
        )


async def _upload_to_custom(
    ctx: UploadContext,
    recording: Recording,
    credentials: StoredCredentials,
    new: NewRecording | None = None,
) -> Outcome:
    started = asyncio.get_running_loop().time()
    backend = credentials.backend
    # with "recording stored" / "upload will be retried" it shows who uploaded what when (the
    # fault tests check from these lines that two workers never upload one recording at once)
    log.info("upload started", recording_id=recording.id, attempt=recording.attempts + 1)
    try:
        store = ctx.store_for(recording.connection_id, credentials)
        stored = _stored_object(recording)
        # no extension in a customer's bucket
        key = layout.object_key(
            recording.account_id, recording.recording_started_at, stored.leaf, None
        )
        await _copy_to(ctx, store, key, stored, recording)
    except Exception as exc:
        return await _upload_failed(ctx, recording, credentials, exc)
    UPLOADS.labels(backend=backend, outcome="ok").inc()
    UPLOAD_SECONDS.labels(backend=backend).observe(asyncio.get_running_loop().time() - started)
    url = store.canonical_url(key)
    move = change(
        recording.status,
        Event.STORED_CUSTOM,
        backend=backend,
        bucket=store.bucket,
        object_key=key,
        recording_url=url,
        credentials_revision=credentials.revision,
    )
    application = new.application if new is not None else None
    event = await _commit_move(ctx, recording, move, recording_url=url, application=application)
    if event is False:
        await _discard_if_deleted(ctx, recording.id, store, key)
        return Outcome()
    log.info("recording stored", recording_id=recording.id, location=backend)
    delivery = None
    if new is not None and event is not None:
        # what the round needs is in memory: the placement just written, the rows ingest read
        transitions.apply_to(recording, move)
        delivery = DeliveryContext(event, new.application, new.account, recording)
    return Outcome(
        event_id=event.id if event else None,
        staging_key=recording.default_store_key,
        delivery=delivery,
    )


def _stored_object(recording: Recording) -> layout.RecordingObject:
    return layout.recording_object(
        recording_id=recording.id,
        connection_id=recording.connection_id,
        call_control_id=recording.call_control_id,
        call_leg_id=recording.call_leg_id,
        call_session_id=recording.call_session_id,
        custom_file_name=recording.custom_file_name,
        format=recording.format,
        sha256=recording.sha256,
        decryption_metadata=encryption.object_metadata(recording.encryption_details),
    )


async def _copy_to(
    ctx: UploadContext,
    store: ObjectStore,
    key: str,
    stored: layout.RecordingObject,
    recording: Recording,
) -> None:
    """Put the recording's default-store copy into `store` under `key`, and check it landed."""
    if recording.default_store_key is None:
        raise RuntimeError("the recording has no default-store copy to upload")
    async with default_store_copy(
        ctx.runtime, recording.default_store_key, recording.size_bytes
    ) as source:
        await store.put_file(
            key, source, content_type=stored.content_type, metadata=stored.metadata
        )
    if not store.checks_uploads:
        # the store checked no checksum of what it received: at least look at it
        await _verify_by_head(store, key, recording)


async def _upload_failed(
    ctx: UploadContext, recording: Recording, credentials: StoredCredentials, exc: Exception
) -> Outcome:
    """A failed upload: retried later (transient), or failed for good (permanent)."""
    backend, revision = credentials.backend, credentials.revision
    if isinstance(exc, StorageError):
        outcome = "transient" if not exc.kind.permanent else "permanent"
        UPLOADS.labels(backend=backend, outcome=outcome).inc()
        if exc.kind is StorageErrorKind.TRANSIENT:
            return await _retry_later(ctx, recording.id, revision, exc.reason)
        return await _fail(ctx, recording, revision, policy.error_reason(exc), exc.reason)
    UPLOADS.labels(backend=backend, outcome="transient").inc()
    if isinstance(exc, Retry):
        return await _retry_later(ctx, recording.id, revision, str(exc))
    # a bug or an unmapped library error: retried (and visible in the logs), never lost
    secrets = [str(value) for value in credentials.configuration.values()]
    detail = redact(f"internal error: {type(exc).__name__}: {exc}", secrets)
    log.error("upload failed unexpectedly", recording_id=recording.id, detail=detail)
    return await _retry_later(ctx, recording.id, revision, detail)


async def _verify_by_head(store: ObjectStore, key: str, recording: Recording) -> None:
    info = await store.head(key)
    backend = store.backend
    if info is None:
        raise Retry(f"{backend}: the object is missing right after the upload")
    if info.size != recording.size_bytes:
        raise Retry(
            f"{backend}: size after upload is {info.size} bytes, expected {recording.size_bytes}"
        )
    stored_sha = info.metadata.get("sha256")
    if stored_sha is not None and stored_sha != recording.sha256:
        raise Retry(f"{backend}: sha256 metadata after upload does not match")


async def _discard_if_deleted(
    ctx: UploadContext, recording_id: str, store: ObjectStore, key: str
) -> None:
    """The recording was deleted through the API while it was being uploaded: the object
    this upload just put must not stay in the customer's bucket. (A lease lost to another
    worker is left alone: that worker owns the object now.)"""
    async with ctx.runtime.sessions() as session:
        status = await repository.status_of(session, recording_id)
    if status not in (None, RecordingStatus.DELETED):
        return
    try:
        await store.delete(key)
    except StorageError as exc:
        # retried by nothing: say so loudly (the key names the object to remove by hand)
        log.error("object of a deleted recording not removed", key=key, detail=exc.reason)
        return
    DELETED_DURING_UPLOAD.inc()
    log.info("recording deleted during its upload: object removed", recording_id=recording_id)


async def _retry_later(
    ctx: UploadContext, recording_id: str, revision: int | None, detail: str
) -> Outcome:
    now = utcnow()
    settings = ctx.runtime.settings
    give_up_after = timedelta(seconds=settings.upload_give_up_secs)
    async with transaction(ctx.runtime.sessions) as session:
        recording = await session.get(Recording, recording_id, populate_existing=True)
        if recording is None or recording.lease_owner != ctx.owner:
            return Outcome()
        first_failure_at = recording.first_failure_at or now
        attempts = recording.attempts + 1
        if not policy.gives_up(first_failure_at, now, give_up_after):
            delay = policy.retry_delay(attempts, ctx.rng, settings.upload_backoff_cap_secs)
            await session.run_sync(
                transitions.schedule_retry,
                recording_id,
                ctx.owner,
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=delay),
                first_failure_at=first_failure_at,
                detail=detail,
            )
            log.info(
                "upload will be retried",
                recording_id=recording_id,
                attempts=attempts,
                delay_secs=round(delay, 2),
                detail=detail,
            )
            return Outcome()
    return await _fail(
        ctx,
        recording,
        revision,
        policy.INTERNAL_ERROR,
        policy.gave_up_detail(give_up_after, detail),
        attempts=attempts,
    )


async def _fail(
    ctx: UploadContext,
    recording: Recording,
    revision: int | None,
    reason: str,
    detail: str,
    *,
    attempts: int | None = None,
) -> Outcome:
    """Permanent failure: kept in the default store, `call.recording.error` sent."""
    tries = attempts if attempts is not None else recording.attempts + 1
    move = transitions.failed(reason, detail, revision, tries)
    event = await _commit_move(ctx, recording, move)
    if event is False:
        return Outcome()
    log.warning(
        "recording kept in the default store",
        recording_id=recording.id,
        reason=reason,
        detail=detail,
    )
    return Outcome(event_id=event.id if event else None)


async def record_crash(ctx: UploadContext, recording_id: str, exc: Exception) -> Outcome:
    """A recording job that crashed in our own code counts as a failed attempt: retried on the
    upload backoff, and `failed` ("Internal server error") once the give-up horizon passes,
    like any transient failure. Should the failure path itself crash (it builds the error
    event), the row is failed without an event: visible, never retried in a loop."""
    detail = f"internal error: {type(exc).__name__}"
    JOB_CRASHES.labels(job="upload").inc()
    log.error("upload job crashed", recording_id=recording_id, error_type=type(exc).__name__)
    try:
        return await _retry_later(ctx, recording_id, None, detail)
    except Exception as again:
        if database_unavailable(again):
            raise
        log.error(
            "error path crashed too", recording_id=recording_id, error_type=type(again).__name__
        )
    async with transaction(ctx.runtime.sessions) as session:
        recording = await session.get(Recording, recording_id, populate_existing=True)
        if recording is None:
            return Outcome()
        await session.run_sync(
            transitions.mark_failed,
            recording_id,
            ctx.owner,
            reason=policy.INTERNAL_ERROR,
            detail=f"{detail} (no error webhook could be made)",
            credentials_revision=recording.credentials_revision,
            attempts=recording.attempts + 1,
            event=Event.FAILED_WITHOUT_WEBHOOK,
        )
    return Outcome()


@asynccontextmanager
async def default_store_copy(
    runtime: Runtime, key: str, size_bytes: int
) -> AsyncIterator[Path | bytes]:
    """The default-store copy as put_file takes it: the store's own file when it is a local
    directory; else its bytes in memory up to IN_MEMORY_LIMIT (`size_bytes`, the row's, decides
    before the GET), or a temp copy in the data dir above (removed afterwards)."""
    store = runtime.default_store
    path = store.local_path(key)
    if path is not None:
        if not await asyncio.to_thread(path.is_file):
            raise RuntimeError("the recording's default-store copy is missing")
        yield path
        return
    stream = store.get_stream(key)
    held: list[bytes] = []
    if size_bytes <= IN_MEMORY_LIMIT:
        held_bytes = 0
        async for chunk in stream:
            held.append(chunk)
            held_bytes += len(chunk)
            if held_bytes > IN_MEMORY_LIMIT:
                break  # larger than its row says: the rest goes to a temp file, below
        else:
            body = b"".join(held)
            held.clear()  # the chunks go: one copy is held during the upload, not two
            yield body
            return
    # named after this process: what a kill -9 leaves is removed by the next one (scratch.py)
    path = await asyncio.to_thread(temp_path, runtime.settings.data_dir / "staging")
    try:
        handle = await asyncio.to_thread(path.open, "wb")
        try:
            for chunk in held:
                await asyncio.to_thread(handle.write, chunk)
            held.clear()
            async for chunk in stream:
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        yield path
    finally:
        await asyncio.to_thread(path.unlink, True)


async def remove_staging_copy(runtime: Runtime, recording_id: str, key: str) -> None:
    """The customer's copy is verified and its `stored` committed: the staging copy goes now,
    and its key is forgotten with the next commit (lifecycle: staging copy removed). Not
    urgent: a crash in between is finished by the sweep."""
    if await delete_staging_object(runtime, recording_id, key):
        runtime.batch_writer.defer(ForgottenStagingKey(recording_id, key))


@dataclass(frozen=True)
class ForgottenStagingKey:
    """A group-commit unit (batch_writer.Joinable): forget a deleted staging copy's key, with
    the others of its batch in one statement."""

    recording_id: str
    key: str

    def __call__(self, session: Session) -> None:
        transitions.forget_staging_keys(session, [(self.recording_id, self.key)])

    @classmethod
    def write_together(cls, session: Session, units: list[ForgottenStagingKey]) -> list[None]:
        transitions.forget_staging_keys(session, [(u.recording_id, u.key) for u in units])
        return [None] * len(units)


async def delete_staging_copy(runtime: Runtime, recording_id: str, key: str) -> bool:
    """Delete a stored recording's default-store copy, then forget its key (idempotent)."""
    if not await delete_staging_object(runtime, recording_id, key):
        return False
    await runtime.batch_writer.run(ForgottenStagingKey(recording_id, key))
    return True


async def delete_staging_object(runtime: Runtime, recording_id: str, key: str) -> bool:
    """Delete the default-store copy only (its key is forgotten by the caller's transaction,
    or by the sweep); whether it is gone."""
    try:
        await runtime.default_store.delete(key)
    except StorageError as exc:
        log.warning("staging copy not deleted yet", recording_id=recording_id, detail=exc.reason)
        return False
    return True


async def sweep_staging_copies(runtime: Runtime, limit: int = 100) -> int:
    """Finish step 4 for recordings whose worker died between the commit and the delete."""
    async with runtime.sessions() as session:
        leftovers = await repository.leftover_staging_copies(session, limit)
    deleted = 0
    for recording_id, key in leftovers:
        deleted += await delete_staging_copy(runtime, recording_id, key)
    return deleted


@dataclass
class RecordingJobs:
    """The recording job kind's runners: a recording claimed (by id) or handed over by ingest
    (in memory), moved to its final place, then its event sent and its staging copy removed."""

    uploads: UploadContext
    crew: Crew

    async def run_claimed(self, recording_id: str) -> None:
        await self._run(recording_id, None)

    async def run_handed(self, new: NewRecording) -> None:
        """A recording handed over by ingest (leased to us, in memory: no claim, no read)."""
        await self._run(new.recording.id, new)

    async def _run(self, recording_id: str, new: NewRecording | None) -> None:
        # every log line of this job (upload, webhook, staging copy) names the recording
        with structlog.contextvars.bound_contextvars(recording_id=recording_id):
            try:
                outcome = await process_recording(self.uploads, recording_id, new)
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing can be written now: the lease expires, the job comes back
                # a bug of ours: counted and scheduled like any failure (bounded, visible)
                outcome = await record_crash(self.uploads, recording_id, exc)
            await self._follow_up(recording_id, outcome)

    async def _follow_up(self, recording_id: str, outcome: Outcome) -> None:
        """Remove the staging copy, and send the event the state change made."""
        if outcome.staging_key is not None:
            # before the event's round: the key is forgotten in the round's own commit
            await remove_staging_copy(self.uploads.runtime, recording_id, outcome.staging_key)
        if outcome.event_id is None:
            return
        # the event is leased to this worker already: sent in a delivery slot, at once if
        # one is free (a slow receiver never holds the upload slot, and the delivery slots
        # bound the rounds in flight); from memory when it is all there
        if outcome.delivery is not None:
            self.crew.hand(EVENT_JOB, outcome.event_id, outcome.delivery)
        else:
            self.crew.run_held(EVENT_JOB.name, outcome.event_id)
