"""The database half of recordings/lifecycle.py: every UPDATE of a recording's state.

A change made by the pipeline is guarded by the lease: it is conditional on the worker still
holding the row (`lease_owner`) in the transition's source state, so a worker whose lease
expired (and was taken over) cannot overwrite the new owner's work: its update matches no row
and its transaction, with the webhook event inside, is rolled back.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from callvault.db import update_each_held, utcnow
from callvault.recordings.lifecycle import Change, Event, RecordingStatus, change, sources
from callvault.recordings.models import Recording


def apply_held(session: Session, recording_id: str, owner: str, move: Change) -> bool:
    """Write `move` to a recording this worker holds in the move's source state."""
    statement = _held(move.source, tuple(sorted(move.values)))
    result = session.execute(statement, _parameters(recording_id, owner, move))
    return bool(result.rowcount)  # type: ignore[attr-defined]


HeldChange = tuple[str, str, Change]  # recording id, lease owner, the move


def apply_held_many(session: Session, moves: Sequence[HeldChange]) -> list[bool]:
    """`apply_held` for many recordings: one SELECT of who holds them, locked, then one UPDATE
    per kind of move, executed for all of its rows (db.update_each_held); whether each was
    held."""
    ids = [recording_id for recording_id, _, _ in moves]
    if len(moves) == 1 or len(set(ids)) < len(ids):
        return [apply_held(session, *held) for held in moves]
    found = session.execute(_HOLDERS, {"ids": ids})
    holders = {recording_id: (owner, status) for recording_id, owner, status in found}
    held = [holders.get(rid) == (owner, move.source) for rid, owner, move in moves]
    groups: dict[tuple[RecordingStatus, tuple[str, ...]], list[dict[str, Any]]] = {}
    for holds, (recording_id, owner, move) in zip(held, moves, strict=True):
        if holds:
            key = (move.source, tuple(sorted(move.values)))
            groups.setdefault(key, []).append(_parameters(recording_id, owner, move))
    for key, parameters in groups.items():
        update_each_held(session, _held(*key), parameters)
    return held


# The pipeline's statements are built on the Table, not the entity: naming the entity's
# attributes sends a statement through the ORM's compile and execute steps, which rows only
# written or read as tuples do not need (docs/performance.md, "Seventh pass").
_TABLE: Table = Recording.__table__  # type: ignore[assignment]

# who holds each of `ids`, and in which state; locked until the transaction ends
_HOLDERS = (
    select(_TABLE.c.id, _TABLE.c.lease_owner, _TABLE.c.status)
    .where(_TABLE.c.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)


def _parameters(recording_id: str, owner: str, move: Change) -> dict[str, Any]:
    new = {f"new_{name}": value for name, value in move.values.items()}
    return {"held_id": recording_id, "held_owner": owner, **new}


def _held(source: RecordingStatus, columns: tuple[str, ...]) -> Any:
    """A state change, built once per source and set of columns with its values as bound
    parameters (built per call, `.values(**values)` cost a cache key over every value: issue
    24). On the Table, so that it runs with one row or many (the entity would take a list for
    the ORM's bulk update by key)."""
    key = (source, columns)
    statement = _HELD.get(key)
    if statement is None:
        statement = _HELD[key] = _held_statement(source, columns)
    return statement


def _held_statement(source: RecordingStatus, columns: tuple[str, ...]) -> Any:
    table = _TABLE
    return (
        update(table)
        .where(
            table.c.id == bindparam("held_id"),
            table.c.lease_owner == bindparam("held_owner"),
            table.c.status == source,
        )
        .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns})
    )


_HELD: dict[tuple[RecordingStatus, tuple[str, ...]], Any] = {}


def apply_to(recording: Recording, move: Change) -> None:
    """Write `move` to a row loaded (and locked) in the caller's transaction."""
    for name, value in move.values.items():
        setattr(recording, name, value)
    recording.updated_at = utcnow()


def mark_failed(
    session: Session,
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
    move = failed(reason, detail, credentials_revision, attempts, event)
    return apply_held(session, recording_id, owner, move)


def failed(
    reason: str,
    detail: str,
    credentials_revision: int | None,
    attempts: int,
    event: Event = Event.FAILED,
) -> Change:
    """The move to `failed` (with its error webhook unless `event` says otherwise)."""
    return change(
        RecordingStatus.RECEIVED,
        event,
        error_reason=reason,
        error_detail=detail,
        credentials_revision=credentials_revision,
        attempts=attempts,
    )


def schedule_retry(
    session: Session,
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
    return apply_held(session, recording_id, owner, move)


def forget_staging_keys(session: Session, staged: Sequence[tuple[str, str]]) -> None:
    """The default-store copies of recordings now in custom storage are gone: (recording id,
    key) pairs, one statement for all (executemany). A row that moved on meanwhile (deleted,
    or its key forgotten already) is left as it is."""
    session.execute(
        _forget_statement(), [{"staged_id": rid, "staged_key": key} for rid, key in staged]
    )


@functools.cache
def _forget_statement() -> Any:
    """Built once: the move writes constants, only the row and its key are bound."""
    move = change(RecordingStatus.STORED, Event.STAGING_REMOVED)
    return (
        update(_TABLE)
        .where(
            _TABLE.c.id == bindparam("staged_id"),
            _TABLE.c.status == move.source,
            _TABLE.c.default_store_key == bindparam("staged_key"),
        )
        .values(move.values)
    )


async def requeue_after_new_credentials(
    session: AsyncSession, connection_id: str, revision: int | None, now: datetime
) -> int:
    """Failed recordings of the connection go back to the queue, unless they already failed
    under this very revision (None: newly created credentials, so every failure was under
    others); recordings waiting on a backoff are tried now."""
    requeue = change(RecordingStatus.FAILED, Event.CREDENTIALS_REPLACED, next_attempt_at=now)
    conditions = [Recording.connection_id == connection_id, Recording.status == requeue.source]
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
        .values(requeue.values)
        .execution_options(synchronize_session=False)
    )
    hurry = change(RecordingStatus.RECEIVED, Event.CREDENTIALS_REPLACED, next_attempt_at=now)
    await session.execute(
        update(Recording)
        .where(
            Recording.connection_id == connection_id,
            Recording.status == hurry.source,
            Recording.next_attempt_at > now,
        )
        .values(hurry.values)
        .execution_options(synchronize_session=False)
    )
    return int(failed.rowcount)  # type: ignore[attr-defined]


async def requeue_for_redelivery(session: AsyncSession, recording_id: str, now: datetime) -> bool:
    """A failed recording, or one kept in the default store, is processed again."""
    moves = [
        change(source, Event.REDELIVERY_REQUESTED, next_attempt_at=now)
        for source in sources(Event.REDELIVERY_REQUESTED)
    ]
    # every source writes the same columns: one statement for all of them
    values = moves[0].values
    assert all(move.values == values for move in moves)
    from_failed = Recording.status == RecordingStatus.FAILED
    # stored: only a recording kept in the default store, in no customer bucket
    from_stored = and_(Recording.status == RecordingStatus.STORED, Recording.backend.is_(None))
    assert {move.source for move in moves} == {RecordingStatus.FAILED, RecordingStatus.STORED}
    result = await session.execute(
        update(Recording)
        .where(Recording.id == recording_id, or_(from_failed, from_stored))
        .values(values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
