"""Ingest: a received upload becomes a durable object in the default store and a row.

The contract with the worker: the row is committed with status `received`,
`next_attempt_at=now` and `default_store_key` set, and only then is `work_ready` set and the
media server answered 202. The worker does the rest (custom storage, webhooks).

Idempotency: (connection_id, call_leg_id, recording_started_at) names a recording. A repeat is
answered with the existing row (200) and stores nothing; two concurrent first sends race on the
table's unique constraint (`INSERT … ON CONFLICT DO NOTHING RETURNING`) and the loser answers
with the winner's row.

Database work per new recording (issue 14): one read when the metadata arrives (application,
account, encryption key, custom storage or not, repeat, key in use: `IngestPlan`) and one
transaction: the INSERT, leased to this process's worker when it has a free slot (`Inbox`:
the worker then takes the job from memory, no claim and no re-read). A connection without
custom storage needs no worker step: its recording is inserted `stored` (the default store is
its final place) with its `call.recording.saved` event, in the same transaction, and the event
is what is handed over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from callvault import metrics
from callvault.db import LOOP_READ_ERRORS, LoopReader, database_unavailable, transaction, utcnow
from callvault.encryption_keys import scheme as encryption
from callvault.encryption_keys.scheme import Recipient
from callvault.errors import (
    ApiError,
    conflict,
    database_unavailable_error,
    insufficient_storage,
    invalid,
    misconfigured,
    unavailable,
)
from callvault.recordings import repository
from callvault.recordings.handoffs import EVENT_JOB, RECORDING_JOB, NewRecording
from callvault.recordings.models import Recording, RecordingStatus
from callvault.recordings.schemas import IngestMetadata
from callvault.recordings.service import default_store_link
from callvault.recordings.upload import ReceivedUpload
from callvault.runtime import AnyHandoff, Handoff, Inbox, Runtime
from callvault.storage.base import StorageError
from callvault.storage.layout import extension_for, object_key, recording_leaf, recording_object
from callvault.webhooks import service as webhooks
from callvault.webhooks.models import WebhookEvent
from callvault.webhooks.repository import DeliveryContext

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


# reasons of a misconfigured default store logged already by this process: logged once,
# not once per refused recording
_misconfigured_logged: set[str] = set()


def store_unavailable(error: StorageError) -> ApiError:
    if storage_full(error.reason):
        return no_space("the default store")
    if error.kind.permanent:
        # a missing bucket or refused credentials do not pass: a configuration error for the
        # operator (GET /ready names it), not "try again"
        if error.reason not in _misconfigured_logged:
            _misconfigured_logged.add(error.reason)
            log.error("default store misconfigured", reason=error.reason, kind=error.kind.value)
        return misconfigured(
            "The platform's default store is misconfigured (the operator must fix it; "
            f"GET /ready names the check): {error.reason}. Nothing was kept."
        )
    return unavailable(f"The recording could not be stored, try again: {error.reason}")


class IngestPlan:
    """What ingest reads from the database, in one statement, as soon as the metadata is
    known (the upload needs the encryption key before it writes a byte): the application's
    account and key, a repeat's row, whether the default-store key is taken."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._looked_up = False
        self._context: repository.IngestContext | None = None

    async def context(self, meta: IngestMetadata) -> repository.IngestContext | None:
        if not self._looked_up:
            key: ContextKey = (
                meta.connection_id,
                meta.call_leg_id,
                meta.recording_started_at,
                default_store_key(ACCOUNT_PLACEHOLDER, meta)[len(ACCOUNT_PLACEHOLDER) :],
            )
            read = _read_on_loop(self.runtime.loop_reader, key)
            if read is None:
                async with self.runtime.sessions() as session:  # reads only: no write lock
                    self._context = await session.run_sync(repository.ingest_context, *key)
            else:
                (self._context,) = read
            self._looked_up = True
        return self._context

    async def recipient(self, meta: IngestMetadata) -> Recipient | None:
        """The upload's `EncryptionResolver`: whom the audio is encrypted for."""
        context = await self.context(meta)
        if context is None or context.key_id is None:
            return None
        assert context.key_fingerprint is not None and context.key_public_pem is not None
        return Recipient(
            key_id=context.key_id,
            fingerprint=context.key_fingerprint,
            public_key_pem=context.key_public_pem,
        )


ContextKey = tuple[str, str, datetime, str]


def _read_on_loop(
    reader: LoopReader | None, key: ContextKey
) -> tuple[repository.IngestContext | None] | None:
    """SQLite: the context read on the event loop itself, without the thread hop and async
    adapter a session costs (db.LoopReader); None where it is not read so (PostgreSQL, or an
    error: read through a session then)."""
    if reader is None:
        return None
    try:
        with reader.session() as session:
            return (repository.ingest_context(session, *key),)
    except LOOP_READ_ERRORS:
        reader.close()  # the next read opens a new connection
        return None


# the key layout starts with the account id; the lookup compares the rest in SQL
ACCOUNT_PLACEHOLDER = "account"


async def ingest(
    runtime: Runtime, upload: ReceivedUpload, plan: IngestPlan | None = None
) -> IngestOutcome:
    recording_id = upload.recording_id  # chosen before the audio was encrypted (it binds it)
    # every log line of this ingest names the recording and its connection
    with structlog.contextvars.bound_contextvars(
        recording_id=recording_id, connection_id=upload.metadata.connection_id
    ):
        return await _ingest(runtime, upload, recording_id, plan or IngestPlan(runtime))


async def _ingest(
    runtime: Runtime, upload: ReceivedUpload, recording_id: str, plan: IngestPlan
) -> IngestOutcome:
    meta = upload.metadata
    context = await plan.context(meta)
    if context is None:
        raise invalid(
            "No Call Control application has this connection_id.",
            pointer="/metadata/connection_id",
        )
    if context.existing_id is not None:
        log.info("recording received again", recording_id=context.existing_id)
        existing_status = context.existing_status or RecordingStatus.RECEIVED
        return IngestOutcome(context.existing_id, existing_status, created=False)
    account_id = context.application.account_id
    key = default_store_key(account_id, meta)
    writing = keys_being_written(runtime)
    if context.key_taken or key in writing:
        # another recording of this leaf started in the same second (a reused
        # custom_file_name, or a quick stop/start), stored or being stored by this process:
        # never overwrite its bytes
        key = default_store_key(account_id, meta, disambiguator=recording_id[:8])
    writing.add(key)
    try:
        return await _store(runtime, upload, recording_id, context, key)
    finally:
        writing.discard(key)


class KeysBeingWritten(set[str]):
    """Default-store keys ingest is writing right now in this process: two recordings of one
    leaf in one second never share a key, even before either row is committed."""


def keys_being_written(runtime: Runtime) -> KeysBeingWritten:
    """This process's keys being written, kept with its runtime (runtime.py `domain_part`)."""
    return runtime.domain_part(KeysBeingWritten, _no_keys)


def _no_keys(_runtime: Runtime) -> KeysBeingWritten:
    return KeysBeingWritten()


async def _store(
    runtime: Runtime,
    upload: ReceivedUpload,
    recording_id: str,
    context: repository.IngestContext,
    key: str,
) -> IngestOutcome:
    """The object first (durable), then the row: the 202 comes only once both are."""
    await _put_in_default_store(runtime, upload, recording_id, key)
    # with custom storage the worker copies it there; else the default store is its final
    # place already: stored, and its `call.recording.saved` made, in the same transaction
    custom = context.has_custom_storage
    # the job the worker gets: upload, or webhook
    with Reservation(runtime.inbox, "recording" if custom else "event") as reservation:
        insert = await _new_row(runtime, upload, recording_id, context, key, reservation)
        inserted = await _commit(runtime, insert, reservation)
        if inserted:
            _hand_over(runtime, reservation, insert.recording, insert.event, context)
    if not inserted:
        return await _lost_race(runtime, upload, key)
    _log_received(upload, insert.recording)
    # the 202 says `received` whatever comes next (the pinned interface)
    return IngestOutcome(recording_id, RecordingStatus.RECEIVED, created=True)


async def _put_in_default_store(
    runtime: Runtime, upload: ReceivedUpload, recording_id: str, key: str
) -> None:
    meta = upload.metadata
    stored = recording_object(
        recording_id=recording_id,
        connection_id=meta.connection_id,
        call_control_id=meta.call_control_id,
        call_leg_id=meta.call_leg_id,
        call_session_id=meta.call_session_id,
        custom_file_name=meta.custom_file_name,
        format=meta.format,
        sha256=upload.sha256,
        # encrypted_cek, iv, public_key_id: the object alone suffices to decrypt it
        decryption_metadata=encryption.object_metadata(upload.encryption_details),
    )
    try:
        # a local directory store takes the received file itself (a rename, not a copy)
        await runtime.default_store.move_file(
            key, upload.path, content_type=stored.content_type, metadata=stored.metadata
        )
    except StorageError as exc:
        if not exc.kind.permanent:
            log.warning("default store refused a recording", reason=exc.reason)
        raise store_unavailable(exc) from None


class Reservation:
    """A slot of this process's worker for the job an ingest is about to commit (the row is
    written leased to it), or none (no worker here, or no room: the workers' claim takes the
    row). Cancelled on the way out of its `with` unless it was handed over."""

    def __init__(self, inbox: Inbox | None, kind: str) -> None:
        self.kind = kind
        self.lease_until = inbox.reserve(kind) if inbox is not None else None
        self._inbox = inbox if self.lease_until is not None else None

    @property
    def owner(self) -> str | None:
        return self._inbox.owner if self._inbox is not None else None

    @property
    def held(self) -> bool:
        return self._inbox is not None

    def hand(self, handoff: AnyHandoff) -> None:
        assert self._inbox is not None
        self._inbox.hand(handoff)
        self._release()

    def cancel(self) -> None:
        if self._inbox is not None:
            self._inbox.cancel(self.kind)
        self._release()

    def _release(self) -> None:
        self._inbox = None
        self.lease_until = None

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


def _row_values(
    upload: ReceivedUpload,
    recording_id: str,
    context: repository.IngestContext,
    key: str,
    reservation: Reservation,
) -> dict[str, Any]:
    meta = upload.metadata
    now = utcnow()
    custom = context.has_custom_storage
    return dict(
        id=recording_id,
        account_id=context.application.account_id,
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
        status=RecordingStatus.RECEIVED if custom else RecordingStatus.STORED,
        default_store_key=key,
        attempts=0,
        next_attempt_at=now if custom else None,
        lease_owner=reservation.owner if custom else None,
        lease_until=reservation.lease_until if custom else None,
        created_at=now,
        updated_at=now,
    )


class NewRow:
    """The new recording's row and, without custom storage, its saved event: a unit of the
    group commit (batch_writer.py), run again alone if its batch fails."""

    def __init__(
        self,
        values: dict[str, Any],
        recording: Recording,
        context: repository.IngestContext,
        link: str,
        reservation: Reservation,
    ) -> None:
        self.values = values
        self.recording = recording
        self.context = context
        self.link = link
        self.owner = reservation.owner
        self.lease_until = reservation.lease_until if self.owner else None
        self.event: WebhookEvent | None = None
        self.committing = False  # True once the rows are flushed: a failure is the commit's

    @property
    def custom(self) -> bool:
        return self.context.has_custom_storage

    def new_event(self) -> webhooks.NewEvent:
        return webhooks.NewEvent(
            self.recording,
            recording_url=self.link,
            lease_owner=self.owner,
            lease_until=self.lease_until,
            application=self.context.application,
        )

    def __call__(self, session: Session) -> bool:
        return self.write_together(session, [self])[0]

    @classmethod
    def write_together(cls, session: Session, rows: list[NewRow]) -> list[bool]:
        """Many ingests' rows in one statement per table (batch_writer.Joinable): the
        recordings in one INSERT, then the saved events of those inserted without custom
        storage in another."""
        for row in rows:
            row.event, row.committing = None, False
        inserted = repository.insert_new(session, [row.values for row in rows])
        added = [row.values["id"] in inserted for row in rows]
        saving = [row for row, new in zip(rows, added, strict=True) if new and not row.custom]
        events = webhooks.record_events(session, [row.new_event() for row in saving])
        for row, event in zip(saving, events, strict=True):
            row.event = event
        for row in rows:
            row.committing = True
        return added

    async def insert_without_event(self, runtime: Runtime) -> bool:
        """The row alone, `received`, for the worker (which makes the event), unleased."""
        self.event = None
        self.values.update(
            status=RecordingStatus.RECEIVED,
            next_attempt_at=self.values["created_at"],
            lease_owner=None,
            lease_until=None,
        )
        self.recording = Recording(**self.values)
        async with transaction(runtime.sessions) as session:
            inserted = self.values["id"] in await session.run_sync(
                repository.insert_new, [self.values]
            )
            self.committing = True
        return inserted


async def _new_row(
    runtime: Runtime,
    upload: ReceivedUpload,
    recording_id: str,
    context: repository.IngestContext,
    key: str,
    reservation: Reservation,
) -> NewRow:
    values = _row_values(upload, recording_id, context, key, reservation)
    recording = Recording(**values)  # in memory: the event's payload, the worker's job
    custom = context.has_custom_storage
    link = "" if custom else await default_store_link(runtime, recording) or ""
    return NewRow(values, recording, context, link, reservation)


async def _commit(runtime: Runtime, insert: NewRow, reservation: Reservation) -> bool:
    """Whether the row was inserted (False: the same recording was committed concurrently);
    a failure is answered (409, 503) with the object forgotten unless the row may exist."""
    key = insert.values["default_store_key"]
    try:
        try:
            # ingests that arrive together share one transaction and one fsync; the answer
            # comes only once this recording's rows are committed
            return await runtime.batch_writer.run(insert)
        except Exception as exc:
            if insert.custom or insert.committing or isinstance(exc, IntegrityError):
                raise
            if database_unavailable(exc):
                raise
            # a bug of ours in making the event (rolled back): the recording is kept for the
            # worker, which makes the event and counts a crash like any other (bounded)
            log.error("saved event not made at ingest", error_type=type(exc).__name__)
            reservation.cancel()
            return await insert.insert_without_event(runtime)
    except IntegrityError:
        reservation.cancel()
        # not the natural key (ON CONFLICT took care of it): e.g. the account vanished
        await _forget_object(runtime, key)
        raise conflict("The recording was not stored.") from None
    except Exception as exc:
        reservation.cancel()
        if not database_unavailable(exc):
            await _forget_object(runtime, key)
            raise
        # never 202 without a committed row; never a 500 for an outage: 503 + Retry-After
        committed = insert.committing and await _committed_after_all(runtime, insert.recording.id)
        if not committed:
            await _forget_object(runtime, key)
        log.warning("database unavailable: ingest refused", error_type=type(exc).__name__)
        raise database_unavailable_error() from None
    except BaseException:
        reservation.cancel()
        if not insert.committing:
            # never ran (a cancelled caller leaves the group commit's queue); once it ran, its
            # row may be committed: the object stays (an unreferenced one is the lesser harm)
            await _forget_object(runtime, key)
        raise


def _hand_over(
    runtime: Runtime,
    reservation: Reservation,
    recording: Recording,
    event: WebhookEvent | None,
    context: repository.IngestContext,
) -> None:
    """The committed job to this process's worker, in memory (it was written leased to it);
    without a lease (no worker here, or none free) the workers' claim takes it."""
    if not reservation.held:
        runtime.work_ready.set()
        return
    handoff = _handoff(recording, event, context)
    if handoff is None:
        reservation.cancel()
    else:
        reservation.hand(handoff)


def _handoff(
    recording: Recording, event: WebhookEvent | None, context: repository.IngestContext
) -> Handoff[NewRecording] | Handoff[DeliveryContext] | None:
    """What the worker gets for the job: the recording to upload, or the event to deliver."""
    if recording.status == RecordingStatus.RECEIVED:
        job = NewRecording(recording, context.application, context.account)
        return Handoff(RECORDING_JOB, recording.id, job)
    if event is not None:
        delivery = DeliveryContext(
            event=event,
            application=context.application,
            account=context.account,
            recording=recording,
        )
        return Handoff(EVENT_JOB, event.id, delivery)
    return None


def _log_received(upload: ReceivedUpload, recording: Recording) -> None:
    metrics.RECORDINGS_INGESTED.inc()
    metrics.RECORDING_BYTES_INGESTED.inc(upload.size)
    log.info(
        "recording received",
        recording_id=recording.id,
        connection_id=upload.metadata.connection_id,
        format=upload.metadata.format,
        size_bytes=upload.size,
        duration_millis=upload.audio.duration_millis,
    )
    if recording.status == RecordingStatus.STORED:
        log.info("recording stored", recording_id=recording.id, location="default")


def default_store_key(account_id: str, meta: IngestMetadata, disambiguator: str = "") -> str:
    """The layout's key; the disambiguator (part of the recording id) only when it is taken."""
    leaf = recording_leaf(meta.custom_file_name, meta.call_leg_id, disambiguator)
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
