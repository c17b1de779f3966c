"""Every query of the worker: claiming due rows of a job table with leases, renewing and
releasing them. Which tables, and when a row is due, the job kinds say (worker/kinds.py).

A job is claimed by writing `lease_owner` (the worker's id) and `lease_until`; every later
change of the row is conditional on still holding that lease (the domain's own UPDATEs, e.g.
recordings/transitions.py), so a worker whose lease expired (and was taken over) cannot
overwrite the new owner's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from callvault.db import UTCDateTime
from callvault.worker.kinds import Queue


def _lease_free(model: Any, now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    return or_(model.lease_until.is_(None), model.lease_until < now)


async def claim(
    session: AsyncSession,
    queue: Queue,
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
    key = (queue, postgresql)
    statement = _CLAIMS.get(key)
    if statement is None:
        statement = _CLAIMS[key] = _claim_statement(queue, postgresql)
    taken = await session.scalars(
        statement,
        {"claim_owner": owner, "claim_now": now, "claim_until": lease_until, "claim_limit": limit},
    )
    return list(taken.all())


def _claim_statement(queue: Queue, postgresql: bool) -> Any:
    """The claim, built once per queue and dialect (its values are bound parameters: building
    it per claim cost ~1 ms of CPU, most of a claim, in the py-spy profile of issue 24)."""
    model, status = queue.model, queue.due_status
    now = bindparam("claim_now", type_=UTCDateTime())
    due = aliased(model, name="due_job")  # not correlated with the UPDATE's own table
    # fair across customers: every connection's oldest due job comes before anyone's second,
    # so one customer's backlog of thousands cannot hold the others back
    tenant = getattr(due, queue.tenant)
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


_CLAIMS: dict[tuple[Queue, bool], Any] = {}


async def renew(
    session: AsyncSession, model: Any, ids: Sequence[str], *, owner: str, lease_until: datetime
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


async def release(session: AsyncSession, model: Any, ids: Sequence[str], *, owner: str) -> None:
    """Give the jobs back at once (graceful stop): another worker may take them immediately."""
    if ids:
        await session.execute(
            update(model)
            .where(model.id.in_(list(ids)), model.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )
