"""The database budget of one recording (issue 14), counted over the real flow: ingest over
HTTP, the in-process worker, the customer bucket (SeaweedFS) or the default store, the signed
webhook, the staging copy's removal.

A SQLAlchemy event listener on the runtime's engines (and on the loop reader's, which reads
ingest's context on SQLite: db.LoopReader) counts every statement but the transaction
control ones (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PRAGMA) and every commit of a transaction that
wrote (INSERT, UPDATE, DELETE): those are the commits that fsync (SQLite WAL with
synchronous=FULL, PostgreSQL). On an engine in autocommit (PostgreSQL's express writer), every
statement that writes is such a commit. The test's own checks read through a second engine, which is
not counted. The worker polls rarely here (60 s), so what is counted is what the recordings
cost, not the idle polling of an empty queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session

from callvault.accounts.service import NewAccount
from callvault.db import make_engine, transaction, utcnow
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookEvent
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, ingest, make_wav, store_in_new_bucket

RECORDINGS = 4
MAX_STATEMENTS_PER_RECORDING = 8
MAX_FSYNCED_COMMITS = {"default": 2, "custom": 3}
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA")
_WRITES = ("INSERT", "UPDATE", "DELETE")


@dataclass
class SqlCounter:
    """Statements and fsynced commits on some engines while attached, and the writes any
    session made through the ORM (an ORM-enabled INSERT, UPDATE or DELETE, or a flush)."""

    statements: list[str] = field(default_factory=list)
    fsynced_commits: int = 0
    orm_writes: list[str] = field(default_factory=list)
    _writing: set[int] = field(default_factory=set)

    def attach(self, *engines: Engine) -> None:
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._execute)
            event.listen(engine, "after_cursor_execute", self._executed)
            event.listen(engine, "commit", self._commit)
            event.listen(engine, "rollback", self._rollback)
        event.listen(Session, "do_orm_execute", self._orm_execute)
        event.listen(Session, "before_flush", self._flush)
        event.listen(Engine, "before_cursor_execute", self._loop_read)

    def detach(self, *engines: Engine) -> None:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", self._execute)
            event.remove(engine, "after_cursor_execute", self._executed)
            event.remove(engine, "commit", self._commit)
            event.remove(engine, "rollback", self._rollback)
        event.remove(Session, "do_orm_execute", self._orm_execute)
        event.remove(Session, "before_flush", self._flush)
        event.remove(Engine, "before_cursor_execute", self._loop_read)

    def _loop_read(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """A read on the event loop (db.LoopReader's engine, `sqlite://`: ingest's context on
        SQLite): a statement too, though not through the runtime's engines."""
        if str(conn.engine.url) == "sqlite://":
            self.statements.append(" ".join(statement.split())[:160])

    def _orm_execute(self, state: ORMExecuteState) -> None:
        if state.is_orm_statement and (state.is_insert or state.is_update or state.is_delete):
            self.orm_writes.append(" ".join(str(state.statement).split())[:160])

    def _flush(self, session: Session, *args: Any) -> None:
        self.orm_writes.append(f"flush of {len(session.new)} new, {len(session.dirty)} changed")

    @contextmanager
    def counting(self, *engines: Engine) -> Iterator[SqlCounter]:
        """Attached for the block."""
        self.attach(*engines)
        try:
            yield self
        finally:
            self.detach(*engines)

    @staticmethod
    def _key(conn: Any) -> int:
        return id(conn.connection.dbapi_connection)

    def _execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if verb in _CONTROL:
            return
        self.statements.append(" ".join(statement.split())[:160])
        if _writes(statement) and conn.dialect.isolation_level != "AUTOCOMMIT":
            self._writing.add(self._key(conn))

    def _executed(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # in autocommit a write is its own commit, once it has succeeded (one that failed,
        # e.g. on a connection an outage left dead, committed nothing)
        if _writes(statement) and conn.dialect.isolation_level == "AUTOCOMMIT":
            self.fsynced_commits += 1

    def _commit(self, conn: Any) -> None:
        key = self._key(conn)
        if key in self._writing:
            self._writing.discard(key)
            self.fsynced_commits += 1

    def _rollback(self, conn: Any) -> None:
        self._writing.discard(self._key(conn))


async def _park_leftovers(runtime: Runtime) -> None:
    """The session's database holds other tests' due work (events whose receivers are gone,
    uploads never finished): made due tomorrow, so that this worker's first claim does not
    take it into the count."""
    later = utcnow() + timedelta(days=1)
    async with transaction(runtime.sessions) as session:
        for model in (WebhookEvent, Recording):
            await session.execute(
                update(model)
                .where(model.next_attempt_at <= later)
                .values(next_attempt_at=later)
                .execution_options(synchronize_session=False)
            )


def _writes(statement: str) -> bool:
    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
    return verb in _WRITES or _writes_with(statement)


def _writes_with(statement: str) -> bool:
    """A WITH whose parts write (PostgreSQL's one-statement round record)."""
    words = statement.split()
    return bool(words) and words[0].upper() == "WITH" and any(w.upper() in _WRITES for w in words)


async def _wait(check: Callable[[], Any], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("arrival", ["one at a time", "burst"])
@pytest.mark.parametrize("storage", ["default", "custom"])
async def test_statements_and_fsynced_commits_per_recording(
    storage: str,
    arrival: str,
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    if storage == "custom":
        await store_in_new_bucket(api, account.api_key, connection_id, seaweedfs)
    # a burst: three times as many recordings at once as the worker has upload slots, so that
    # most arrive while every slot is busy (the budget must hold under load too: they are
    # handed over to the worker's backlog, not left for claims; Worker._room_for)
    slots = 2 if arrival == "burst" else None
    await _park_leftovers(runtime)
    await start_worker(poll_seconds=60.0, lease_seconds=600.0, concurrency=slots)
    checks = make_engine(runtime.settings.database_url)  # not counted

    async def settled(recording_id: str) -> bool:
        async with checks.connect() as conn:
            row = (
                await conn.execute(
                    select(Recording.status, Recording.backend, Recording.default_store_key).where(
                        Recording.id == recording_id
                    )
                )
            ).one()
            events = (
                await conn.execute(
                    select(WebhookEvent.status).where(WebhookEvent.recording_id == recording_id)
                )
            ).all()
        staging_gone = storage == "default" or row.default_store_key is None
        delivered = [e.status for e in events] == ["delivered"]
        return row.status == "stored" and staging_gone and delivered

    # warm-up: the worker's first claim and the store's client are not what a recording costs
    warm_up, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    await webhook_receiver.wait_for(1, within=60)
    await _wait(lambda: settled(warm_up), "warm-up recording settled")

    count = RECORDINGS if arrival == "one at a time" else 3 * (slots or 1)
    token = runtime.settings.ingest_token
    counter = SqlCounter()
    counter.attach(*runtime.writing_engines)
    try:
        if arrival == "burst":
            sent = await asyncio.gather(
                *(ingest(api, token, connection_id, make_wav(0.2)) for _ in range(count))
            )
            await webhook_receiver.wait_for(1 + count, within=60)
            for n, (recording_id, _) in enumerate(sent):
                await _wait(lambda rid=recording_id: settled(rid), f"recording {n} settled")
        for n in range(count if arrival == "one at a time" else 0):
            recording_id, _ = await ingest(api, token, connection_id, make_wav(0.2))
            await webhook_receiver.wait_for(2 + n, within=60)
            await _wait(lambda rid=recording_id: settled(rid), f"recording {n} settled")
    finally:
        counter.detach(*runtime.writing_engines)
        await checks.dispose()

    statements = len(counter.statements) / count
    commits = counter.fsynced_commits / count
    print(
        f"\n{storage} store, {arrival}, {runtime.engine.dialect.name}: {statements:.2f} "
        f"statements, {commits:.2f} fsynced commits per recording"
    )
    listing = "\n".join(counter.statements)
    assert statements <= MAX_STATEMENTS_PER_RECORDING, listing
    assert commits <= MAX_FSYNCED_COMMITS[storage], listing
    # every write of a recording's way is a Core statement on a Table: the ORM's compile and
    # flush steps cost CPU that rows written as values do not need (bench/db_roundtrip.py)
    assert counter.orm_writes == []


CONCURRENCY = 8
MAX_FSYNCED_COMMITS_AT_CONCURRENCY = 1.0  # issue 24: group commit at ingest and in the worker


async def test_fsynced_commits_per_recording_at_concurrency_8(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    """The default-store path, 8 ingests at a time: the ingests that arrive together share a
    commit, and so do the delivery records of the webhooks answered together (issue 24)."""
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await _park_leftovers(runtime)
    await start_worker(poll_seconds=60.0, lease_seconds=600.0)
    token = runtime.settings.ingest_token
    await ingest(api, token, connection_id, make_wav(0.2))  # warm-up
    await webhook_receiver.wait_for(1, within=60)
    checks = make_engine(runtime.settings.database_url)  # not counted

    async def delivered(count: int) -> bool:
        async with checks.connect() as conn:
            rows = (
                await conn.execute(
                    select(WebhookEvent.status).where(WebhookEvent.application_id == connection_id)
                )
            ).all()
        return len(rows) == count and all(row.status == "delivered" for row in rows)

    await _wait(lambda: delivered(1), "warm-up delivered")
    count = 4 * CONCURRENCY
    audio = [make_wav(0.2) for _ in range(count)]
    slots = asyncio.Semaphore(CONCURRENCY)

    async def send(wav: bytes) -> None:
        async with slots:
            await ingest(api, token, connection_id, wav)

    counter = SqlCounter()
    counter.attach(*runtime.writing_engines)
    express_before = runtime.batch_writer.express_batches
    try:
        await asyncio.gather(*(send(wav) for wav in audio))
        await webhook_receiver.wait_for(1 + count, within=60)
        await _wait(lambda: delivered(1 + count), "every webhook's record committed")
    finally:
        counter.detach(*runtime.writing_engines)
        await checks.dispose()
    commits = counter.fsynced_commits / count
    print(
        f"\ndefault store, concurrency {CONCURRENCY}, {runtime.engine.dialect.name}: "
        f"{commits:.2f} fsynced commits, {len(counter.statements) / count:.2f} statements "
        f"per recording ({runtime.batch_writer.express_batches - express_before} express batches)"
    )
    assert commits <= MAX_FSYNCED_COMMITS_AT_CONCURRENCY, "\n".join(counter.statements)
