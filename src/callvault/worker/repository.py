"""Every query of the worker: claiming jobs (recording rows, webhook-event rows) with leases,
and the recording's state transitions.

A job is claimed by writing `lease_owner` (the worker's id) and `lease_until`; every later
transition is conditional on still holding that lease, so a worker whose lease expired (and was
taken over) cannot overwrite the new owner's work: its update matches no row and its
transaction, with the webhook event inside, is rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.credentials.models import StorageCredentials
from callvault.db import UTCDateTime
from callvault.recordings import transitions
from callvault.recordings.lifecycle import Event, change
from callvault.recordings.models import Recording, RecordingStatus
from callvault.webhooks.models import EventStatus, WebhookEvent

JobModel = type[Recording] | type[WebhookEvent]
DUE_STATUS: dict[Any, str] = {
    Recording: RecordingStatus.RECEIVED,
    WebhookEvent: EventStatus.PENDING,
}


def _lease_free(model: Any, now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(model.lease_until.is_(None), model.lease_until < now)


async def claim(
    session: AsyncSession,
    model: JobModel,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    postgresql: bool,
) -> list[str]:
    """Lease up to `limit` due jobs in one statement; returns their ids.

    `UPDATE … WHERE id IN (the due ids) RETURNING id` (issue 24: one statement, one round trip
    per batch of N). PostgreSQL: the inner select is `FOR UPDATE SKIP LOCKED`, so concurrent
    workers pass over each other's rows instead of queueing on them. SQLite: every write
    transaction is BEGIN IMMEDIATE (one writer at a time), so no other claim interleaves. The
    update repeats the lease condition anyway and RETURNING reports exactly what was taken.
    """
    if limit <= 0:
        return []
    key = (model, postgresql)
    statement = _CLAIMS.get(key)
    if statement is None:
        statement = _CLAIMS[key] = _claim_statement(model, postgresql)
    taken = await session.scalars(
        statement,
        {"claim_owner": owner, "claim_now": now, "claim_until": lease_until, "claim_limit": limit},
    )
    return list(taken.all())


def _claim_statement(model: JobModel, postgresql: bool) -> Any:
    """The claim, built once per queue and dialect (its values are bound parameters: building
    it per claim cost ~1 ms of CPU, most of a claim, in the py-spy profile of issue 24)."""
    status = DUE_STATUS[model]
    now = bindparam("claim_now", type_=UTCDateTime())
    due = aliased(model, name="due_job")  # not correlated with the UPDATE's own table
    # fair across customers: every connection's oldest due job comes before anyone's second,
    # so one customer's backlog of thousands cannot hold the others back
    tenant = due.connection_id if model is Recording else due.application_id  # type: ignore[union-attr]
    ranked = (
        select(
            due.id.label("id"),
            due.next_attempt_at.label("due"),
            func.row_number().over(partition_by=tenant, order_by=due.next_attempt_at).label("turn"),
        )
        .where(due.status == status, due.next_attempt_at <= now, _lease_free(due, now))
        .subquery()
    )
    picked = aliased(model, name="picked_job")
    query = (
        select(picked.id)
        .join(ranked, ranked.c.id == picked.id)
        .order_by(ranked.c.turn, ranked.c.due)
        .limit(bindparam("claim_limit", type_=Integer()))
    )
    if postgresql:
        query = query.with_for_update(skip_locked=True, of=picked)
    return (
        update(model)
        .where(model.id.in_(query), model.status == status, _lease_free(model, now))
        .values(
            lease_owner=bindparam("claim_owner"),
            lease_until=bindparam("claim_until", type_=UTCDateTime()),
        )
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )


_CLAIMS: dict[tuple[Any, bool], Any] = {}


async def renew(
    session: AsyncSession, model: JobModel, ids: Sequence[str], *, owner: str, lease_until: datetime
) -> set[str]:
    """Extend the leases this worker still holds; returns the ids it still holds."""
    if not ids:
        return set()
    kept = await session.scalars(
        update(model)
        .where(model.id.in_(list(ids)), model.lease_owner == owner)
        .values(lease_until=lease_until)
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    return set(kept.all())


async def release(
    session: AsyncSession, model: JobModel, ids: Sequence[str], *, owner: str
) -> None:
    """Give the jobs back at once (graceful stop): another worker may take them immediately."""
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_(list(ids)), model.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


_RECORDING_JOB = (
    select(Recording, Application, Account)
    .join(Account, Account.id == Recording.account_id)
    .outerjoin(Application, Application.id == Recording.connection_id)
    .where(Recording.id == bindparam("recording_id"))
    .execution_options(populate_existing=True)
)


async def recording_job(
    session: AsyncSession, recording_id: str
) -> tuple[Recording, Application | None, Account] | None:
    """A claimed recording with its application (None: deleted) and account, in one read:
    what its upload, its event and the event's delivery round need (no more reads)."""
    row = (await session.execute(_RECORDING_JOB, {"recording_id": recording_id})).first()
    if row is None:
        return None
    return row[0], row[1], row[2]


async def mark_stored_default(session: AsyncSession, recording_id: str, owner: str) -> bool:
    """No custom storage: the default-store copy is the final place."""
    move = change(RecordingStatus.RECEIVED, Event.STORED_DEFAULT)
    return await transitions.apply_held(session, recording_id, owner, move)


async def mark_stored_custom(
    session: AsyncSession,
    recording_id: str,
    owner: str,
    *,
    backend: str,
    bucket: str,
    object_key: str,
    recording_url: str,
    credentials_revision: int,
) -> bool:
    move = change(
        RecordingStatus.RECEIVED,
        Event.STORED_CUSTOM,
        backend=backend,
        bucket=bucket,
        object_key=object_key,
        recording_url=recording_url,
        credentials_revision=credentials_revision,
    )
    return await transitions.apply_held(session, recording_id, owner, move)


async def mark_failed(
    session: AsyncSession,
    recording_id: str,
    owner: str,
    *,
    reason: str,
    detail: str,
    credentials_revision: int | None,
    attempts: int,
    event: Event = Event.FAILED,
) -> bool:
    """Permanent failure: the recording stays in the default store (location default)."""
    move = change(
        RecordingStatus.RECEIVED,
        event,
        error_reason=reason,
        error_detail=detail,
        credentials_revision=credentials_revision,
        attempts=attempts,
    )
    return await transitions.apply_held(session, recording_id, owner, move)


async def schedule_retry(
    session: AsyncSession,
    recording_id: str,
    owner: str,
    *,
    attempts: int,
    next_attempt_at: datetime,
    first_failure_at: datetime,
    detail: str,
) -> bool:
    move = change(
        RecordingStatus.RECEIVED,
        Event.RETRY_SCHEDULED,
        attempts=attempts,
        next_attempt_at=next_attempt_at,
        first_failure_at=first_failure_at,
        error_detail=detail,
    )
    return await transitions.apply_held(session, recording_id, owner, move)


forget_staging_key = transitions.forget_staging_key


async def leftover_staging_copies(session: AsyncSession, limit: int) -> list[tuple[str, str]]:
    """(id, default_store_key) of recordings stored in custom storage whose staging copy was
    not deleted yet (a crash between the commit and the delete)."""
    rows = await session.execute(
        select(Recording.id, Recording.default_store_key)
        .where(
            Recording.status == RecordingStatus.STORED,
            Recording.backend.is_not(None),
            Recording.default_store_key.is_not(None),
        )
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows if row[1] is not None]


async def current_revision(session: AsyncSession, connection_id: str) -> int | None:
    return await session.scalar(
        select(StorageCredentials.revision).where(StorageCredentials.connection_id == connection_id)
    )


requeue_after_new_credentials = transitions.requeue_after_new_credentials
requeue_for_redelivery = transitions.requeue_for_redelivery


async def failed_recording_ids(
    session: AsyncSession, connection_id: str | None = None
) -> list[str]:
    """Ids of the recordings that failed for good (kept in the default store), oldest first."""
    query = select(Recording.id).where(Recording.status == RecordingStatus.FAILED)
    if connection_id is not None:
        query = query.where(Recording.connection_id == connection_id)
    return list((await session.scalars(query.order_by(Recording.created_at))).all())


async def status_of(session: AsyncSession, recording_id: str) -> str | None:
    return await session.scalar(select(Recording.status).where(Recording.id == recording_id))
