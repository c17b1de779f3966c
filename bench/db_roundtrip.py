"""CPU and wall time of the smallest database round trips on the embedded SQLite, with
callvault's driver (db.make_engine: one thread hop per statement) or the stock aiosqlite
adapter, on uvloop like `callvault serve`.

    .venv/bin/python bench/db_roundtrip.py [--stock] [--n 2000]

Prints per operation: a read session with one primary-key `get`, a SELECT inside an open
session, ingest's context read through a session and on the event loop (db.LoopReader), a
write transaction (UPDATE + COMMIT, fsynced: synchronous=FULL) with one and with two UPDATEs,
through a session and as the group commit writes it (db.ThreadWrites), and the one-UPDATE
transaction through `sqlite3` itself (no statement layer), in a thread and on the event loop:
what the statement layer costs per transaction. Also one bound
UPDATE inside an open session written on the entity's attributes (`Account.id`: the ORM's
compile and execute steps) and on the Table's columns (Core): what the ORM costs a statement
that needs no objects.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import uvloop
from sqlalchemy import Table, bindparam, event, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from callvault import db
from callvault.accounts.models import Account
from callvault.applications.models import Application
from callvault.config import sqlalchemy_url
from callvault.recordings import repository


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process, every thread
    return usage.ru_utime + usage.ru_stime


def stock_engine(url: str) -> AsyncEngine:
    """make_engine's SQLite set-up (pragmas, BEGIN, pool) with the stock aiosqlite adapter."""
    engine = create_async_engine(
        sqlalchemy_url(url), connect_args={"timeout": 30}, pool_size=64, max_overflow=64
    )
    event.listen(engine.sync_engine, "connect", db._sqlite_pragmas)
    event.listen(engine.sync_engine, "begin", db._sqlite_begin)
    return engine


async def measure(label: str, n: int, step: Callable[[], Awaitable[object]]) -> None:
    for _ in range(50):  # warm-up: statement cache, pool
        await step()
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(n):
        await step()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"{label:42s} {wall / n * 1e6:7.0f} us wall  {cpu / n * 1e6:7.0f} us CPU")


async def main(stock: bool, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="callvault-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        await asyncio.to_thread(db.migrate, url)
        engine = stock_engine(url) if stock else db.make_engine(url)
        sessions = db.make_sessionmaker(engine)
        async with db.transaction(sessions) as session:
            session.add(
                Account(
                    id="a1",
                    name="bench",
                    webhook_public_key="p",
                    webhook_private_key_sealed="s",
                )
            )
        print(f"driver: {'stock aiosqlite adapter' if stock else 'callvault.sqlite_driver'}")

        async def read_session() -> None:
            async with sessions() as session:
                await session.get(Account, "a1")

        async with sessions() as open_session:

            async def select_in_session() -> None:
                await open_session.execute(select(Account.id).where(Account.id == "a1"))

            await measure("read session + get by primary key", n, read_session)
            await measure("SELECT in an open session", n, select_in_session)
            for label, statement in _BOUND_UPDATES.items():

                async def bound_update(statement: object = statement) -> None:
                    await open_session.execute(statement, {"held_id": "a1", "new_name": "b"})

                await measure(label, n, bound_update)

        async def write_transaction() -> None:
            async with db.transaction(sessions) as session:
                await session.execute(text("UPDATE accounts SET name = 'b' WHERE id = 'a1'"))

        async def two_updates() -> None:
            async with db.transaction(sessions) as session:
                await session.execute(text("UPDATE accounts SET name = 'b' WHERE id = 'a1'"))
                await session.execute(text("UPDATE accounts SET name = 'c' WHERE id = 'a1'"))

        await measure_context_read(url, sessions, n)

        writes = max(1, n // 4)
        await measure("write transaction (UPDATE + COMMIT)", writes, write_transaction)
        await measure("write transaction, two UPDATEs", writes, two_updates)
        await thread_writes(url, sessions, writes)
        await engine.dispose()
        await plain_sqlite(url, writes)


_ACCOUNTS: Table = Account.__table__  # type: ignore[assignment]
# the same UPDATE, built once with bound values, as the hot path's statements are
_BOUND_UPDATES = {
    "UPDATE on the entity's attributes (ORM)": update(_ACCOUNTS)
    .where(Account.id == bindparam("held_id"))
    .values(name=bindparam("new_name")),
    "UPDATE on the Table's columns (Core)": update(_ACCOUNTS)
    .where(_ACCOUNTS.c.id == bindparam("held_id"))
    .values(name=bindparam("new_name")),
}


async def measure_context_read(
    url: str, sessions: async_sessionmaker[AsyncSession], n: int
) -> None:
    """Ingest's context read (one statement, two entities loaded) through a session of the
    engine, and through db.LoopReader's synchronous session on the loop (what ingest does on
    SQLite)."""
    async with db.transaction(sessions) as session:
        session.add(
            Application(
                id="c1", account_id="a1", application_name="b", webhook_event_url="http://h/"
            )
        )
    key = ("c1", "leg", datetime(2024, 5, 17, tzinfo=UTC), "/2024-05-17/x.wav")

    async def in_session() -> None:
        async with sessions() as session:
            assert await session.run_sync(repository.ingest_context, *key) is not None

    reader = db.LoopReader.for_url(url)
    assert reader is not None

    async def on_loop() -> None:
        with reader.session() as session:
            assert repository.ingest_context(session, *key) is not None

    await measure("ingest context read, session", n, in_session)
    await measure("ingest context read, on the loop", n, on_loop)
    reader.close()


async def thread_writes(url: str, sessions: async_sessionmaker[AsyncSession], n: int) -> None:
    """The same transactions as the group commit writes them on SQLite: synchronous work in
    one hop to the writes' own thread (db.ThreadWrites)."""
    path = db.sqlite_path(url)
    assert path is not None
    writes = db.ThreadWrites(path, sessions)

    def updates(count: int, session: Session) -> None:
        for _ in range(count):
            session.execute(text("UPDATE accounts SET name = 'e' WHERE id = 'a1'"))

    await measure("the same on the writes' thread", n, lambda: writes.write(partial(updates, 1)))
    await measure("two UPDATEs on the writes' thread", n, lambda: writes.write(partial(updates, 2)))
    writes.close()


async def plain_sqlite(url: str, n: int) -> None:
    """The same UPDATE + COMMIT through sqlite3 with callvault's pragmas, no SQLAlchemy."""
    connection = sqlite3.connect(
        url.split(":///", 1)[1], isolation_level=None, check_same_thread=False
    )
    db._sqlite_pragmas(connection, None)

    def update() -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE accounts SET name = 'd' WHERE id = 'a1'")
        connection.execute("COMMIT")

    async def in_thread() -> None:
        await asyncio.to_thread(update)

    async def on_loop() -> None:
        update()  # blocks the loop for the commit's fsync: a measurement, not a design

    await measure("sqlite3 UPDATE + COMMIT, in a thread", n, in_thread)
    await measure("sqlite3 UPDATE + COMMIT, on the loop", n, on_loop)
    connection.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="store_true", help="the stock aiosqlite adapter")
    parser.add_argument("--n", type=int, default=2000, help="operations per measurement")
    args = parser.parse_args()
    uvloop.run(main(args.stock, args.n))
    sys.exit(0)
