"""Engine, sessions and migrations. The database is the source of truth and the job queue.

This module knows no domain: the tables Alembic compares against are loaded by the migration
environment (callvault/migrations/env.py), not here."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, MetaData, TypeDecorator, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import StaticPool

from callvault import sqlite_driver
from callvault.config import sqlalchemy_url
from callvault.moments import as_utc

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}


def utcnow() -> datetime:
    return datetime.now(UTC)


def sqlite_path(database_url: str) -> str | None:
    """An SQLite database's file; None for PostgreSQL and in-memory SQLite."""
    url = sqlalchemy_url(database_url)
    if not url.startswith("sqlite") or ":memory:" in url or ":///" not in url:
        return None
    return url.split(":///", 1)[1]


def private_sqlite_file(url: str) -> None:
    """Create the SQLite file owner-only before SQLite does; its -wal/-shm files copy the mode."""
    file = sqlite_path(url)
    if file is None:
        return
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


# PostgreSQL (asyncpg) bounds: connect, one statement, waiting for a pooled connection
CONNECT_TIMEOUT_SECS = 10.0
COMMAND_TIMEOUT_SECS = 30.0
POOL_TIMEOUT_SECS = 30.0

# execution option set by `transaction()`: this connection's transaction writes (SQLite)
WRITES = "callvault_writes"


def make_engine(
    database_url: str, *, pool_size: int = 10, pre_ping: bool = True, autocommit: bool = False
) -> AsyncEngine:
    """`pool_size`, `pre_ping` and `autocommit` are for PostgreSQL (a pool without pre-ping: a
    connection that died is found by the next statement, an outage error for its caller; in
    autocommit each statement is its own transaction, without BEGIN and COMMIT round trips)."""
    url = sqlalchemy_url(database_url)
    private_sqlite_file(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # a connection is a thread plus pragmas: keep enough for the API's concurrent requests
        # and the worker's jobs instead of opening and closing overflow connections under load
        # (measured with the default pool of 5: ~4 ms of CPU per recording at concurrency 8)
        kwargs.update(connect_args={"timeout": 30}, pool_size=64, max_overflow=64)
        # aiosqlite with one thread hop per statement instead of four (sqlite_driver.py)
        kwargs["module"] = sqlite_driver.dbapi()
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=pre_ping,
            # a database that stops answering must not hold a request or a job forever:
            # connecting, every statement and the wait for a pooled connection are bounded
            pool_timeout=POOL_TIMEOUT_SECS,
            connect_args={
                "timeout": CONNECT_TIMEOUT_SECS,
                "command_timeout": COMMAND_TIMEOUT_SECS,
            },
        )
        if autocommit:
            kwargs["isolation_level"] = "AUTOCOMMIT"
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; synchronous=FULL keeps a committed row
    # through a power cut; the driver's own transaction handling is disabled so that every
    # transaction starts with our own BEGIN (below): IMMEDIATE for writers, so that writers
    # queue instead of deadlocking, deferred for reads.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """BEGIN IMMEDIATE for `transaction()` (it takes the write lock up front, so a writer never
    has to upgrade a read snapshot: in WAL mode that upgrade fails with SQLITE_BUSY at once
    when another writer committed in between). A plain session (`async with sessions()`) only
    reads: a deferred BEGIN, a snapshot that takes no lock and never waits for writers."""
    writes = conn.get_execution_options().get(WRITES, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


class LoopReader:
    """A SQLite connection for reads small enough to run on the event loop itself: a few
    indexed rows, microseconds, where a session costs a thread hop each way and the async
    adapter's machinery (~0.7 ms of CPU for ingest's context read, bench/db_roundtrip.py). In
    WAL mode a reader takes no lock and never waits for a writer; `busy_timeout` 0 makes the
    rare exception (recovery after a crash) fail at once instead of blocking the loop, and
    `query_only` keeps it from ever writing. Callers fall back to a session on any error
    (`LOOP_READ_ERRORS`). Opened on first use (after migrations); one per runtime
    (`Runtime.loop_reader`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._engine: Engine | None = None

    @classmethod
    def for_url(cls, database_url: str) -> LoopReader | None:
        """None for PostgreSQL and in-memory SQLite (no file another connection can share)."""
        path = sqlite_path(database_url)
        return None if path is None else cls(path)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, timeout=0, check_same_thread=False)
            connection.isolation_level = None  # autocommit: each SELECT sees the last commit
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return self._connection

    def scalar(self, sql: str) -> Any:
        row = self._connect().execute(sql).fetchone()
        return None if row is None else row[0]

    def session(self) -> Session:
        """A synchronous session on this connection, for the ORM's reads (the same statements
        and entities as a session of the runtime's engine). After an error, `close` (the next
        read opens a new connection)."""
        if self._engine is None:
            self._engine = create_engine("sqlite://", creator=self._connect, poolclass=StaticPool)
        return Session(self._engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# what a read on the loop may raise: the caller reads through a session instead
LOOP_READ_ERRORS = (sqlite3.Error, sa_exc.DBAPIError)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def database_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the database for one short task (a CLI command, a check before start): its
    own engine, disposed at the end so no connection outlives the task."""
    engine = make_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


# SQLite has one writer at a time. Writers of this process queue on an asyncio lock (per engine
# and event loop) instead of in SQLite's busy handler, which sleeps 1, 2, 5, ... up to 100 ms
# between tries: measured, at concurrency 8 that sleeping was most of an ingest's time. Other
# processes (CLI commands, a second `callvault worker`) still meet at BEGIN IMMEDIATE.
_write_gates: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
# the gates this task holds: a transaction() inside another must not wait for itself
_holding: ContextVar[frozenset[int]] = ContextVar("callvault_write_gates", default=frozenset())


def _write_gate(sessions: async_sessionmaker[AsyncSession]) -> asyncio.Lock | None:
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine) or engine.dialect.name != "sqlite":
        return None
    per_loop = _write_gates.get(engine.sync_engine)
    if per_loop is None:
        per_loop = _write_gates[engine.sync_engine] = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    gate = per_loop.get(loop)
    if gate is None:
        gate = per_loop[loop] = asyncio.Lock()
    return gate


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a write transaction (committed at the end, rolled back on an exception).

    For reads only, use a plain session (`async with sessions() as session`): on SQLite it
    takes no lock and does not queue behind writers."""
    gate = _write_gate(sessions)
    if gate is None or id(gate) in _holding.get():
        async with sessions() as session, session.begin():
            await session.connection(execution_options={WRITES: True})
            yield session
        return
    async with gate:
        token = _holding.set(_holding.get() | {id(gate)})
        try:
            async with sessions() as session, session.begin():
                await session.connection(execution_options={WRITES: True})
                yield session
        finally:
            _holding.reset(token)


T = TypeVar("T")
# a write transaction's work: a synchronous function of a session (the group commit's batch)
Write = Callable[[Session], T]


class WriteTransactions(Protocol):
    """Runs synchronous work in one write transaction, committed at the end (rolled back on
    an exception), and returns its result."""

    async def write(self, work: Write[T]) -> T: ...

    def close(self) -> None: ...


class SessionWrites:
    """Through an async session of `sessions` (`transaction`), the work in its greenlet
    (`AsyncSession.run_sync`): PostgreSQL, in-memory SQLite."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def write(self, work: Write[T]) -> T:
        async with transaction(self.sessions) as session:
            return await session.run_sync(work)

    def close(self) -> None:
        return None


class ThreadWrites:
    """SQLite in a file: the whole transaction in one hop to a thread of its own, on a
    synchronous connection, instead of one hop to an aiosqlite connection's thread per
    statement and the async adapter's machinery around each (bench/db_roundtrip.py: a write
    transaction's CPU falls by a third to a half). Writers of this process still queue on the
    engine's write gate (`transaction`); other processes meet at BEGIN IMMEDIATE. The thread
    keeps its connection between transactions (no pool checkout and reset per batch), and
    opens a new one after a transaction failed."""

    def __init__(self, path: str, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions  # whose write gate the transactions take
        self.engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "begin", _sqlite_begin)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="callvault-writes")
        self._connection: Connection | None = None  # used on the thread only

    async def write(self, work: Write[T]) -> T:
        gate = _write_gate(self._sessions)
        assert gate is not None, "an SQLite engine has a write gate"
        async with gate:
            done = asyncio.get_running_loop().run_in_executor(self._thread, self._commit, work)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                # the transaction goes on in its thread: the gate is held until it has ended
                await settled(done)
                raise

    def _commit(self, work: Write[T]) -> T:
        if self._connection is None:
            self._connection = self.engine.connect().execution_options(**{WRITES: True})
        connection = self._connection
        try:
            with Session(connection, expire_on_commit=False) as session, session.begin():
                return work(session)
        except BaseException:
            self._connection = None
            connection.invalidate()
            raise

    def close(self) -> None:
        self._thread.submit(self._disconnect).result()
        self._thread.shutdown(wait=True)
        self.engine.dispose()

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def settled(future: asyncio.Future[Any]) -> None:
    """Until `future` is done, whatever cancellations arrive meanwhile (the caller re-raises
    its own cancellation afterwards)."""
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError:
            continue


def write_transactions(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> WriteTransactions:
    """The group commit's way to the database: a thread of its own for SQLite in a file."""
    path = sqlite_path(database_url)
    return SessionWrites(sessions) if path is None else ThreadWrites(path, sessions)


class HeldRowChanged(RuntimeError):
    """A row read as held in this transaction did not match its guarded UPDATE."""


def update_each_held(session: Session, statement: Any, parameters: list[dict[str, Any]]) -> None:
    """Execute a guarded UPDATE once per parameter set, as one statement (executemany). The
    caller read every row as held in this transaction, locked (FOR UPDATE; SQLite's write
    transaction holds its one lock), so each must match. Where the driver counts the rows
    (SQLite), one that did not raises: the group commit rolls the batch back and runs each
    unit alone."""
    result = session.execute(statement, parameters)
    updated: int = result.rowcount  # type: ignore[attr-defined]
    counted = session.get_bind().dialect.supports_sane_multi_rowcount
    if counted and updated != len(parameters):
        raise HeldRowChanged(f"{updated} of {len(parameters)} held rows updated")


# SQLSTATE classes of a database that is away rather than of a wrong statement:
# 08 connection exception, 53 insufficient resources, 57P operator intervention (shutdown,
# starting up), 58 system error
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")
_CONNECT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.ECONNABORTED,
}
_SQLITE_UNAVAILABLE = ("unable to open", "disk i/o error", "database is locked", "readonly")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database is away (down, unreachable, starting, out of
    connections, its file not openable) rather than that a statement is wrong: the first is
    waited out (503 + Retry-After at ingest, a backoff in the worker), the second is a bug."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return False
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError | ConnectionError):
        # a raw OSError is the database only when it is about reaching it (asyncpg's
        # connect); a disk error elsewhere is not an outage of the database
        return exc.errno in _CONNECT_ERRNOS or (exc.errno is None and "connect" in str(exc).lower())
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, sqlite3.Error):
            # SQLite says "operational" for a bad statement too: only these mean "away"
            return any(marker in str(exc.orig).lower() for marker in _SQLITE_UNAVAILABLE)
        return True
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    # asyncpg's own errors, raw (at connect) or wrapped by SQLAlchemy
    current: BaseException | None = exc
    for _ in range(4):
        if current is None:
            break
        state = str(getattr(current, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        if (
            type(current).__module__.startswith("asyncpg")
            and "Connection" in type(current).__name__
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def alembic_config(database_url: str) -> Config:
    here = Path(__file__).parent
    config = Config()
    config.set_main_option("script_location", str(here / "migrations"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url))
    return config


def migrate(database_url: str) -> list[str]:
    """Apply all migrations (blocking; call from a thread when inside an event loop); the
    revisions applied, oldest first."""
    private_sqlite_file(sqlalchemy_url(database_url))
    before = current_revision(database_url)
    command.upgrade(alembic_config(database_url), "head")
    return revisions_between(before, head_revision())


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the package ships its migrations"
    return head


def revisions_between(current: str | None, target: str) -> list[str]:
    """The revisions after `current` up to `target`, oldest first (pure: the scripts only)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [
        revision.revision
        for revision in reversed(list(script.iterate_revisions(target, current or "base")))
    ]


def current_revision(database_url: str) -> str | None:
    """The database's revision (None: not migrated at all); raises if it does not answer."""
    return asyncio.run(current_revision_async(database_url))


async def current_revision_async(database_url: str) -> str | None:
    async with database_sessions(database_url) as sessions, sessions() as session:
        return await session_revision(session)


async def session_revision(session: AsyncSession) -> str | None:
    connection = await session.connection()
    return await connection.run_sync(
        lambda sync: MigrationContext.configure(sync).get_current_revision()
    )


async def migrate_async(database_url: str) -> None:
    await asyncio.to_thread(migrate, database_url)
