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

from sqlalchemy import ColumnElement, Integer, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.credentials.models import StorageCredentials
from callvault.db import UTCDateTime
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


def _held(recording_id: str, owner: str) -> ColumnElement[bool]:
    return and_(
        Recording.id == recording_id,
        Recording.lease_owner == owner,
        Recording.status == RecordingStatus.RECEIVED,
    )


async def _transition(
    session: AsyncSession, recording_id: str, owner: str, values: dict[str, Any]
) -> bool:
    columns = tuple(sorted(values))
    statement = _TRANSITIONS.get(columns)
    if statement is None:
        statement = _TRANSITIONS[columns] = _transition_statement(columns)
    parameters = {f"new_{name}": value for name, value in values.items()}
    result = await session.execute(
        statement, {"held_id": recording_id, "held_owner": owner, **parameters}
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _transition_statement(columns: tuple[str, ...]) -> Any:
    """A state change, built once per set of columns with its values as bound parameters
    (built per call, `.values(**values)` cost a cache key over every value: issue 24)."""
    table = Recording.__table__
    return (
        update(Recording)
        .where(
            Recording.id == bindparam("held_id"),
            Recording.lease_owner == bindparam("held_owner"),
            Recording.status == RecordingStatus.RECEIVED,
        )
        .values(
            {
                **{name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns},
                "lease_owner": None,
                "lease_until": None,
            }
        )
        .execution_options(synchronize_session=False)
    )


_TRANSITIONS: dict[tuple[str, ...], Any] = {}


async def mark_stored_default(session: AsyncSession, recording_id: str, owner: str) -> bool:
    """No custom storage: the default-store copy is the final place."""
    return await _transition(
        session,
        recording_id,
        owner,
        dict(
            status=RecordingStatus.STORED,
            backend=None,
            bucket=None,
            object_key=None,
            recording_url=None,
            credentials_revision=None,
            error_reason=None,
            error_detail=None,
            next_attempt_at=None,
        ),
    )


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
    return await _transition(
        session,
        recording_id,
        owner,
        dict(
            status=RecordingStatus.STORED,
            backend=backend,
            bucket=bucket,
            object_key=object_key,
            recording_url=recording_url,
            credentials_revision=credentials_revision,
            error_reason=None,
            error_detail=None,
            next_attempt_at=None,
        ),
    )


async def mark_failed(
    session: AsyncSession,
    recording_id: str,
    owner: str,
    *,
    reason: str,
    detail: str,
    credentials_revision: int | None,
    attempts: int,
) -> bool:
    """Permanent failure: the recording stays in the default store (location default)."""
    return await _transition(
        session,
        recording_id,
        owner,
        dict(
            status=RecordingStatus.FAILED,
            error_reason=reason,
            error_detail=detail,
            credentials_revision=credentials_revision,
            attempts=attempts,
            next_attempt_at=None,
        ),
    )


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
    return await _transition(
        session,
        recording_id,
        owner,
        dict(
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            first_failure_at=first_failure_at,
            error_detail=detail,
        ),
    )


async def forget_staging_key(session: AsyncSession, recording_id: str, key: str) -> None:
    """The default-store copy of a recording now in custom storage is gone."""
    await session.execute(
        update(Recording)
        .where(Recording.id == recording_id, Recording.default_store_key == key)
        .values(default_store_key=None)
        .execution_options(synchronize_session=False)
    )


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


async def requeue_after_new_credentials(
    session: AsyncSession, connection_id: str, revision: int | None, now: datetime
) -> int:
    """Failed recordings of the connection go back to the queue, unless they already failed
    under this very revision (None: newly created credentials, so every failure was under
    others); recordings waiting on a backoff are tried now."""
    conditions = [
        Recording.connection_id == connection_id,
        Recording.status == RecordingStatus.FAILED,
    ]
    if revision is not None:
        conditions.append(
            or_(
                Recording.credentials_revision.is_(None),
                Recording.credentials_revision != revision,
            )
        )
    failed = await session.execute(
        update(Recording)
        .where(*conditions)
        .values(
            status=RecordingStatus.RECEIVED,
            next_attempt_at=now,
            attempts=0,
            first_failure_at=None,
            error_reason=None,
            error_detail=None,
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Recording)
        .where(
            Recording.connection_id == connection_id,
            Recording.status == RecordingStatus.RECEIVED,
            Recording.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(failed.rowcount)  # type: ignore[attr-defined]


async def requeue_for_redelivery(session: AsyncSession, recording_id: str, now: datetime) -> bool:
    """A failed recording, or one kept in the default store, is processed again."""
    result = await session.execute(
        update(Recording)
        .where(
            Recording.id == recording_id,
            or_(
                Recording.status == RecordingStatus.FAILED,
                and_(Recording.status == RecordingStatus.STORED, Recording.backend.is_(None)),
            ),
        )
        .values(
            status=RecordingStatus.RECEIVED,
            next_attempt_at=now,
            attempts=0,
            first_failure_at=None,
            error_reason=None,
            error_detail=None,
            lease_owner=None,
            lease_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


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
