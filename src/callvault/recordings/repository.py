"""Every read of the recordings domain (ingest, the Recordings API, the pipeline); the
state changes are recordings/transitions.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, bindparam, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.credentials.models import StorageCredentials
from callvault.encryption_keys.models import RecordingEncryptionKey
from callvault.recordings.models import Recording, RecordingStatus


@dataclass(frozen=True)
class RecordingFilter:
    """Every filter of `GET /v2/recordings`; None = not filtered. Times are aware (UTC)."""

    connection_id: str | None = None
    call_leg_id: str | None = None
    call_control_id: str | None = None
    call_session_id: str | None = None
    conference_id: str | None = None
    conference_region: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    sip_call_id: str | None = None
    created_at_gte: datetime | None = None
    created_at_lte: datetime | None = None
    start_time_gte: datetime | None = None
    start_time_lte: datetime | None = None
    end_time_gte: datetime | None = None
    end_time_lte: datetime | None = None
    status: str | None = None  # received | stored | failed (the console's filter)


@dataclass(frozen=True)
class IngestContext:
    """What ingest needs to know before it stores a recording, read in one statement."""

    application: Application
    account: Account
    has_custom_storage: bool  # the connection has storage credentials
    existing_id: str | None  # the recording already accepted under this natural key
    existing_status: str | None
    key_taken: bool  # a live recording's bytes sit under the default-store key
    # the application's recording encryption key (None: stored in clear)
    key_id: str | None
    key_fingerprint: str | None
    key_public_pem: str | None


def _ingest_context_query() -> Any:
    existing = aliased(Recording, name="existing")
    other = aliased(Recording, name="other")
    key_taken = exists().where(
        other.default_store_key
        == Application.account_id + bindparam("key_after_account", type_=String()),
        other.status != RecordingStatus.DELETED,
    )
    has_credentials = exists().where(StorageCredentials.connection_id == Application.id)
    return (
        select(
            Application,
            Account,
            has_credentials,
            existing.id,
            existing.status,
            key_taken,
            RecordingEncryptionKey.id,
            RecordingEncryptionKey.fingerprint,
            RecordingEncryptionKey.public_key_pem,
        )
        .join(Account, Account.id == Application.account_id)
        .outerjoin(
            existing,
            (existing.connection_id == Application.id)
            & (existing.call_leg_id == bindparam("call_leg_id"))
            & (existing.recording_started_at == bindparam("started_at")),
        )
        .outerjoin(
            RecordingEncryptionKey,
            (RecordingEncryptionKey.id == Application.recording_encryption_key_id)
            & (RecordingEncryptionKey.account_id == Application.account_id),
        )
        .where(Application.id == bindparam("connection_id"))
    )


# built once: making the aliases and the statement per ingest was measured at ~15 % of the
# serve process's CPU (py-spy); with bind parameters it is also compiled once
_INGEST_CONTEXT = _ingest_context_query()


def ingest_context(
    session: Session,
    connection_id: str,
    call_leg_id: str,
    started_at: datetime,
    key_after_account: str,
) -> IngestContext | None:
    """The application's account and encryption key, the recording of this natural key (a
    repeat) and whether `{account_id}{key_after_account}` is taken; None without application.

    One statement instead of four lookups (issue 14's statement budget); the application and
    account rows come along for the webhook a default-store recording gets at once. A
    synchronous session: db.LoopReader's on the event loop (SQLite), or an async session's
    through `run_sync`."""
    parameters = {
        "connection_id": connection_id,
        "call_leg_id": call_leg_id,
        "started_at": started_at,
        "key_after_account": key_after_account,
    }
    return _ingest_context(session.execute(_INGEST_CONTEXT, parameters).first())


def _ingest_context(row: Sequence[Any] | None) -> IngestContext | None:
    if row is None:
        return None
    return IngestContext(
        application=row[0],
        account=row[1],
        has_custom_storage=bool(row[2]),
        existing_id=row[3],
        existing_status=row[4],
        key_taken=bool(row[5]),
        key_id=row[6],
        key_fingerprint=row[7],
        key_public_pem=row[8],
    )


_RECORDINGS: Table = Recording.__table__  # type: ignore[assignment]


def _insert_new_query(dialect: str, columns: tuple[str, ...]) -> Any:
    # on the Table, not the entity: executed with many rows it is one INSERT of all of them
    # (SQLAlchemy's insertmanyvalues), not the ORM's bulk path
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        # explicit bind parameters: a None is written as NULL (column defaults stay out)
        insert(_RECORDINGS)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing(
            index_elements=["connection_id", "call_leg_id", "recording_started_at"]
        )
        .returning(_RECORDINGS.c.id)
    )


_INSERT_NEW: dict[tuple[str, tuple[str, ...]], Any] = {}


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> set[str]:
    """INSERT the recordings, in one statement however many, each unless its natural key is
    taken (ON CONFLICT DO NOTHING); the ids inserted. A concurrent first send of the same
    recording loses here without an IntegrityError and a rollback. Rows name the same columns.
    (Built once per dialect and columns, the values passed as parameters: `.values(**values)`
    per call cost a cache key over every value.)"""
    columns = tuple(sorted(rows[0]))
    if any(tuple(sorted(row)) != columns for row in rows):
        raise ValueError("rows name different columns")
    key = (session.get_bind().dialect.name, columns)
    statement = _INSERT_NEW.get(key)
    if statement is None:
        statement = _INSERT_NEW[key] = _insert_new_query(*key)
    return set(session.execute(statement, list(rows)).scalars())


async def application_account_id(session: AsyncSession, connection_id: str) -> str | None:
    """The account that owns the application with this id (the recording's connection)."""
    return await session.scalar(
        select(Application.account_id).where(Application.id == connection_id)
    )


async def by_natural_key(
    session: AsyncSession, connection_id: str, call_leg_id: str, started_at: datetime
) -> Recording | None:
    """The recording ingest already accepted for this (connection, leg, start), if any."""
    return await session.scalar(
        select(Recording).where(
            Recording.connection_id == connection_id,
            Recording.call_leg_id == call_leg_id,
            Recording.recording_started_at == started_at,
        )
    )


async def default_key_in_use(session: AsyncSession, key: str) -> bool:
    """Whether a live recording's bytes sit under this default-store key."""
    found = await session.scalar(
        select(Recording.id)
        .where(Recording.default_store_key == key, Recording.status != RecordingStatus.DELETED)
        .limit(1)
    )
    return found is not None


async def add(session: AsyncSession, recording: Recording) -> None:
    session.add(recording)
    await session.flush()


async def live_for_account(
    session: AsyncSession, account_id: str, recording_id: str, *, for_update: bool = False
) -> Recording | None:
    """The account's recording unless it was deleted (another account's id: None)."""
    query = select(Recording).where(
        Recording.id == recording_id,
        Recording.account_id == account_id,
        Recording.status != RecordingStatus.DELETED,
    )
    if for_update:
        # PostgreSQL: lock the row against the worker; SQLite's BEGIN IMMEDIATE already does
        query = query.with_for_update()
    return await session.scalar(query)


async def live_ids_for_account(
    session: AsyncSession, account_id: str, recording_ids: Sequence[str]
) -> list[str]:
    rows = await session.scalars(
        select(Recording.id).where(
            Recording.id.in_(list(recording_ids)),
            Recording.account_id == account_id,
            Recording.status != RecordingStatus.DELETED,
        )
    )
    return list(rows)


async def page_for_account(
    session: AsyncSession, account_id: str, where: RecordingFilter, offset: int, limit: int
) -> tuple[list[Recording], int]:
    """One page of the account's live recordings, newest first, and the total count."""
    conditions = [Recording.account_id == account_id, Recording.status != RecordingStatus.DELETED]
    for column, value in (
        (Recording.connection_id, where.connection_id),
        (Recording.call_leg_id, where.call_leg_id),
        (Recording.call_control_id, where.call_control_id),
        (Recording.call_session_id, where.call_session_id),
        (Recording.conference_id, where.conference_id),
        (Recording.conference_region, where.conference_region),
        (Recording.from_number, where.from_number),
        (Recording.to_number, where.to_number),
        (Recording.sip_call_id, where.sip_call_id),
        (Recording.status, where.status),
    ):
        if value is not None:
            conditions.append(column == value)
    ranges: tuple[tuple[Any, datetime | None, datetime | None], ...] = (
        (Recording.created_at, where.created_at_gte, where.created_at_lte),
        (Recording.recording_started_at, where.start_time_gte, where.start_time_lte),
        (Recording.recording_ended_at, where.end_time_gte, where.end_time_lte),
    )
    for column, low, high in ranges:
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column <= high)
    total = int(
        await session.scalar(select(func.count()).select_from(Recording).where(*conditions)) or 0
    )
    if offset >= total:
        # a page past the end is empty; asking the database would overflow its 64-bit OFFSET
        # for absurd page numbers (a 500)
        return [], total
    rows = await session.scalars(
        select(Recording)
        .where(*conditions)
        .order_by(Recording.created_at.desc(), Recording.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total


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
