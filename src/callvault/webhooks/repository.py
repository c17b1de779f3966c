"""Every query on webhook events and their attempts."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    String,
    Table,
    Text,
    bindparam,
    cast,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy import column as table_column
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import table as lightweight_table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.db import update_each_held
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent


def application(session: Session, application_id: str) -> Application | None:
    return session.get(Application, application_id)


# The hot path's statements are built on the Tables, not the entities: a statement naming an
# entity's attributes goes through the ORM's compile and execute steps, which rows that are only
# written or read as tuples do not need (docs/performance.md, "Seventh pass").
_EVENTS: Table = WebhookEvent.__table__  # type: ignore[assignment]
_INSERT_EVENTS = insert(_EVENTS)
# (attribute, column) of every column an event is written with
_EVENT_COLUMNS = tuple(
    (attribute.key, attribute.columns[0].key) for attribute in sa_inspect(WebhookEvent).column_attrs
)


def add_events(session: Session, events: Sequence[WebhookEvent]) -> None:
    """INSERT the events, in one statement however many they are. The objects stay out of the
    session (transient): no unit of work to flush, nothing to expire or close."""
    if events:
        rows = [{column: getattr(event, key) for key, column in _EVENT_COLUMNS} for event in events]
        session.execute(_INSERT_EVENTS, rows)


class DeliveredRecording(Protocol):
    """What a delivery reads of the recording an event is about: where its bytes are, for a
    fresh link (a Recording has all of it)."""

    id: str
    format: str
    status: str
    recording_url: str | None
    default_store_key: str | None


@dataclass
class RecordingPlacement:
    """A DeliveredRecording as `delivery_context` reads it."""

    id: str
    format: str
    status: str
    recording_url: str | None
    default_store_key: str | None


# the recording's columns a delivery reads, named here: this domain does not import recordings
# (an event carries what its delivery needs; the recording's placement is read with it)
_RECORDINGS = lightweight_table(
    "recordings",
    table_column("id", String),
    table_column("format", String),
    table_column("status", String),
    table_column("recording_url", Text),
    table_column("default_store_key", String),
)


@dataclass(frozen=True)
class DeliveryContext:
    event: WebhookEvent
    application: Application | None  # None: deleted since the event was made
    account: Account
    recording: DeliveredRecording | None


async def delivery_context(
    session: AsyncSession, event_id: str, owner: str
) -> DeliveryContext | None:
    """What one delivery round needs, if the event is still pending and leased to `owner`.

    One query (a round runs for every recording); the application and the recording may be
    gone, the account may not."""
    row = (
        await session.execute(
            select(WebhookEvent, Account, Application, *_RECORDINGS.c)
            .join(Account, Account.id == WebhookEvent.account_id)
            .outerjoin(Application, Application.id == WebhookEvent.application_id)
            .outerjoin(_RECORDINGS, _RECORDINGS.c.id == WebhookEvent.recording_id)
            .where(WebhookEvent.id == event_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    if row is None:
        return None
    event, account, application, *placement = row
    if event.status != EventStatus.PENDING or event.lease_owner != owner:
        return None
    # in _RECORDINGS' column order; all None when the recording is gone
    recording = RecordingPlacement(*placement) if placement[0] is not None else None
    return DeliveryContext(
        event=event, application=application, account=account, recording=recording
    )


# on the Table, executed with many rows: one INSERT for all of them. The ORM's flush would
# fetch each new id back, which SQLite does one INSERT per row for.
_ATTEMPTS: Table = WebhookAttempt.__table__  # type: ignore[assignment]
_INSERT_ATTEMPTS = insert(_ATTEMPTS)


def add_attempts(session: Session, attempts: Sequence[dict[str, Any]]) -> None:
    """INSERT the attempts (column values), in one statement however many they are."""
    if attempts:
        session.execute(_INSERT_ATTEMPTS, list(attempts))


def finish_round(session: Session, event_id: str, owner: str, values: dict[str, Any]) -> bool:
    """Write a round's outcome and give the lease back; False if the lease was lost."""
    statement = _finish_round(tuple(sorted(values)))
    result = session.execute(statement, _parameters(event_id, owner, values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


Round = tuple[str, str, dict[str, Any]]  # event id, lease owner, the event's new values


# what a round writes to its event (webhooks/outcome.next_state): always the first three;
# status and delivered_at only when it says so (NULL in the recordset: kept)
_ROUND_ALWAYS = frozenset({"attempts", "last_error", "next_attempt_at"})
_ROUND_COLUMNS = ("attempts", "last_error", "next_attempt_at", "status", "delivered_at")


def records_in_one_statement(session: Session) -> bool:
    """Whether `record_rounds` is there: PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


def record_rounds(
    session: Session, rounds: Sequence[Round], attempts: Sequence[dict[str, Any]]
) -> list[bool]:
    """PostgreSQL: every round's attempts INSERTed and its event's next state written with the
    lease given back, in one statement of fixed text over two JSON parameters (prepared once
    per connection; one round trip, atomic even in autocommit). Each event once (an UPDATE
    changes a row once). False for a round whose lease was lost (its attempts are kept: they
    were sent)."""
    if len({event_id for event_id, _, _ in rounds}) < len(rounds):
        raise ValueError("an event twice in one record")
    for *_, new in rounds:
        if not _ROUND_ALWAYS <= new.keys() <= set(_ROUND_COLUMNS):
            raise ValueError(f"not a round's columns: {sorted(new)}")
    result = session.execute(
        _record_rounds_statement(),
        {
            "rounds": _json([_round_document(*held) for held in rounds]),
            "attempts": _json(list(attempts)),
        },
    )
    kept = set(result.scalars())
    return [event_id in kept for event_id, _, _ in rounds]


def _round_document(event_id: str, owner: str, new: dict[str, Any]) -> dict[str, Any]:
    return {"held_id": event_id, "held_owner": owner, **new}


def _json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # aware (UTC): timestamptz reads it as is
    raise TypeError(f"not JSON: {type(value).__name__}")


@functools.cache
def _record_rounds_statement() -> Any:
    """Built from the tables' own columns and types, once: WITH (INSERT the attempts FROM a
    recordset) UPDATE the events FROM a recordset RETURNING the ids whose lease held."""
    events = _EVENTS
    written = [c for c in _ATTEMPTS.c if c.name != "id"]
    attempts = _recordset("attempts", [(c.name, c.type) for c in written])
    attempts_written = (
        insert(_ATTEMPTS)
        .from_select([c.name for c in written], select(*attempts.c))
        .cte("attempts_written")
    )
    rounds = _recordset(
        "rounds",
        [("held_id", events.c.id.type), ("held_owner", events.c.lease_owner.type)]
        + [(name, events.c[name].type) for name in _ROUND_COLUMNS],
    )
    kept = ("status", "delivered_at")
    return (
        update(events)
        .add_cte(attempts_written)
        .where(
            events.c.id == rounds.c.held_id,
            events.c.lease_owner == rounds.c.held_owner,
            events.c.status == EventStatus.PENDING,
        )
        .values(
            {
                **{
                    name: func.coalesce(rounds.c[name], events.c[name])
                    if name in kept
                    else rounds.c[name]
                    for name in _ROUND_COLUMNS
                },
                "lease_owner": None,
                "lease_until": None,
            }
        )
        .returning(events.c.id)
    )


def _recordset(parameter: str, columns: list[tuple[str, Any]]) -> Any:
    """jsonb_to_recordset(CAST(:parameter AS jsonb)) AS parameter(name type, ...)."""
    document = cast(bindparam(parameter, type_=Text), JSONB)
    return (
        func.jsonb_to_recordset(document)
        .table_valued(*(table_column(name, kind) for name, kind in columns))
        .render_derived(name=parameter, with_types=True)
    )


def finish_rounds(session: Session, rounds: Sequence[Round]) -> list[bool]:
    """`finish_round` for many rounds (event id, owner, values), each event once: which leases
    the rounds still hold, in one SELECT, then one UPDATE per set of columns executed for all
    of its held rounds (db.update_each_held). PostgreSQL records whole rounds in one statement
    instead (`record_rounds`)."""
    if len(rounds) == 1:
        return [finish_round(session, *rounds[0])]
    ids = [event_id for event_id, _, _ in rounds]
    result = session.execute(_LEASE_HOLDERS, {"ids": ids})
    holders = {event_id: owner for event_id, owner in result}
    held = [holders.get(event_id) == owner for event_id, owner, _ in rounds]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for holds, (event_id, owner, new) in zip(held, rounds, strict=True):
        if holds:
            groups.setdefault(tuple(sorted(new)), []).append(_parameters(event_id, owner, new))
    for columns, parameters in groups.items():
        update_each_held(session, _finish_round(columns), parameters)
    return held


# the lease holder of each pending event among `ids`, locked until the transaction ends
_LEASE_HOLDERS = (
    select(_EVENTS.c.id, _EVENTS.c.lease_owner)
    .where(
        _EVENTS.c.id.in_(bindparam("ids", expanding=True)),
        _EVENTS.c.status == EventStatus.PENDING,
    )
    .with_for_update()
)


def _parameters(event_id: str, owner: str, new: dict[str, Any]) -> dict[str, Any]:
    return {"held_id": event_id, "held_owner": owner, **{f"new_{k}": v for k, v in new.items()}}


def _held_round(event_id: Any, owner: Any) -> tuple[Any, ...]:
    """A round's outcome is written only to a pending event whose lease the round holds."""
    return (
        _EVENTS.c.id == event_id,
        _EVENTS.c.lease_owner == owner,
        _EVENTS.c.status == EventStatus.PENDING,
    )


def _finish_round(columns: tuple[str, ...]) -> Any:
    """Built once per set of columns, the values bound (issue 24: built per round, its
    `.values(**values)` cost a cache key over every value). On the Table, so that it runs
    with one round or many (the entity would take a list for the ORM's bulk update by key)."""
    statement = _FINISH_ROUND.get(columns)
    if statement is None:
        statement = _FINISH_ROUND[columns] = _finish_round_statement(columns)
    return statement


def _finish_round_statement(columns: tuple[str, ...]) -> Any:
    table = _EVENTS
    return (
        update(table)
        .where(*_held_round(bindparam("held_id"), bindparam("held_owner")))
        .values(
            {
                **{name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns},
                "lease_owner": None,
                "lease_until": None,
            }
        )
    )


_FINISH_ROUND: dict[tuple[str, ...], Any] = {}


# ---- the delivery record: GET /v2/webhook_deliveries (webhooks/deliveries.py)


@dataclass(frozen=True)
class DeliveryFilter:
    """The filters of `GET /v2/webhook_deliveries`; None or empty = not filtered.

    `status` "failed" also matches events still being retried (every attempt so far failed).
    `event_types` are stored names (`call.recording.saved`); times are aware datetimes.
    """

    status: str | None = None
    event_types: tuple[str, ...] = ()
    webhook_contains: str | None = None
    attempts_contains: str | None = None
    started_at_gte: datetime | None = None
    started_at_lte: datetime | None = None
    finished_at_gte: datetime | None = None
    finished_at_lte: datetime | None = None


def _first_started() -> Any:
    return (
        select(func.min(func.coalesce(WebhookAttempt.started_at, WebhookAttempt.created_at)))
        .where(WebhookAttempt.event_id == WebhookEvent.id)
        .scalar_subquery()
    )


def _last_finished() -> Any:
    return (
        select(func.max(func.coalesce(WebhookAttempt.finished_at, WebhookAttempt.created_at)))
        .where(WebhookAttempt.event_id == WebhookEvent.id)
        .scalar_subquery()
    )


def _delivery_conditions(account_id: str, where: DeliveryFilter) -> list[Any]:
    attempted = exists().where(WebhookAttempt.event_id == WebhookEvent.id)
    # an event is a delivery record once something was attempted (or it was given up on)
    conditions: list[Any] = [
        WebhookEvent.account_id == account_id,
        or_(WebhookEvent.status != EventStatus.PENDING, attempted),
    ]
    if where.status == "delivered":
        conditions.append(WebhookEvent.status == EventStatus.DELIVERED)
    elif where.status == "failed":
        conditions.append(WebhookEvent.status != EventStatus.DELIVERED)
    if where.event_types:
        conditions.append(WebhookEvent.event_type.in_(where.event_types))
    if where.webhook_contains:
        text = where.webhook_contains
        conditions.append(
            or_(
                WebhookEvent.event_type.contains(text, autoescape=True),
                WebhookEvent.id.contains(text, autoescape=True),
                cast(WebhookEvent.payload, Text).contains(text, autoescape=True),
            )
        )
    if where.attempts_contains:
        text = where.attempts_contains
        conditions.append(
            exists().where(
                WebhookAttempt.event_id == WebhookEvent.id,
                or_(
                    WebhookAttempt.url.contains(text, autoescape=True),
                    WebhookAttempt.error.contains(text, autoescape=True),
                    WebhookAttempt.response_body.contains(text, autoescape=True),
                    cast(WebhookAttempt.status_code, String).contains(text, autoescape=True),
                ),
            )
        )
    started, finished = _first_started(), _last_finished()
    for column, low, high in (
        (started, where.started_at_gte, where.started_at_lte),
        (finished, where.finished_at_gte, where.finished_at_lte),
    ):
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column <= high)
    return conditions


async def deliveries_page(
    session: AsyncSession, account_id: str, where: DeliveryFilter, offset: int, limit: int
) -> tuple[list[WebhookEvent], int]:
    """One page of the account's delivery records, newest first, and the total count."""
    conditions = _delivery_conditions(account_id, where)
    total = int(
        await session.scalar(select(func.count()).select_from(WebhookEvent).where(*conditions)) or 0
    )
    if offset >= total:
        return [], total
    rows = await session.scalars(
        select(WebhookEvent)
        .where(*conditions)
        .order_by(WebhookEvent.created_at.desc(), WebhookEvent.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total


async def delivery_for_account(
    session: AsyncSession, account_id: str, event_id: str
) -> WebhookEvent | None:
    """The account's delivery record with this id (another account's: None)."""
    return await session.scalar(
        select(WebhookEvent).where(
            *_delivery_conditions(account_id, DeliveryFilter()), WebhookEvent.id == event_id
        )
    )


async def attempts_of(
    session: AsyncSession, event_ids: Sequence[str]
) -> dict[str, list[WebhookAttempt]]:
    """Every attempt of these events, newest first per event."""
    found: dict[str, list[WebhookAttempt]] = {event_id: [] for event_id in event_ids}
    if not event_ids:
        return found
    rows = await session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.event_id.in_(list(event_ids)))
        .order_by(WebhookAttempt.event_id, WebhookAttempt.id.desc())
    )
    for attempt in rows:
        found[attempt.event_id].append(attempt)
    return found
