"""Group commit at ingest (issue 24): ingests that arrive together share one transaction, and
each is still answered for itself — one refused row never fails its neighbours, two sends of
the same recording in one batch are one recording.

A batch is formed on purpose: a first unit holds the writer (it waits on an event inside the
writer's transaction) while the ingests queue up behind it; once they all wait, it is let go
and the queued ingests go in one batch. A trigger makes the database itself refuse one row.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from callvault.accounts.service import NewAccount
from callvault.db import transaction
from callvault.recordings.models import RecordingStatus
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookEvent
from tests.batching import HeldUnit
from tests.recordings.conftest import (
    metadata_for,
    objects_of,
    post_recording,
    recording_row,
    rows_for_connection,
)
from tests.recordings.samples import make_wav
from tests.worker.test_statement_budget import SqlCounter

pytestmark = pytest.mark.usefixtures("clean_incoming")


async def _until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.005)


class HeldWriter:
    """Holds the runtime's batch writer busy until `release()`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.unit = HeldUnit()
        self.task: asyncio.Task[str] | None = None

    async def hold(self) -> None:
        self.task = asyncio.create_task(self.runtime.batch_writer.run(self.unit))
        await self.unit.running()  # inside the writer's transaction
        assert self.runtime.batch_writer.waiting == 0

    async def release(self) -> None:
        self.unit.release()
        assert self.task is not None
        await self.task


@pytest.fixture
async def poison(runtime: Runtime) -> AsyncIterator[str]:
    """A call_leg_id whose recording row the database refuses (a constraint-class error)."""
    leg = f"poisoned-{uuid.uuid4().hex[:8]}"
    postgresql = runtime.engine.dialect.name == "postgresql"
    async with transaction(runtime.sessions) as session:
        if postgresql:
            await session.execute(
                text(
                    "CREATE FUNCTION test_poison() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.call_leg_id = '{leg}' THEN RAISE EXCEPTION 'poisoned row' "
                    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER test_poison BEFORE INSERT ON recordings "
                    "FOR EACH ROW EXECUTE FUNCTION test_poison()"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE TRIGGER test_poison BEFORE INSERT ON recordings "
                    f"WHEN NEW.call_leg_id = '{leg}' BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            )
    try:
        yield leg
    finally:
        async with transaction(runtime.sessions) as session:
            await session.execute(
                text(
                    "DROP TRIGGER test_poison ON recordings"
                    if postgresql
                    else "DROP TRIGGER test_poison"
                )
            )
            if postgresql:
                await session.execute(text("DROP FUNCTION test_poison()"))


async def test_a_poisoned_member_fails_alone(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    connection_id: str,
    poison: str,
) -> None:
    writer = runtime.batch_writer
    held = HeldWriter(runtime)
    await held.hold()
    good = [metadata_for(connection_id) for _ in range(4)]
    bad = metadata_for(connection_id, call_leg_id=poison)
    everything = [*good[:2], bad, *good[2:]]
    sends = [
        asyncio.create_task(post_recording(api, runtime, meta, make_wav(0.2)))
        for meta in everything
    ]
    await _until(lambda: writer.waiting == len(everything), "every ingest queued")
    split_before = writer.split_batches
    await held.release()
    answers = await asyncio.gather(*sends)

    # they went in one batch, which failed on the poisoned row and was split
    assert writer.split_batches == split_before + 1
    by_leg = {meta["call_leg_id"]: answer for meta, answer in zip(everything, answers, strict=True)}
    refused = by_leg.pop(poison)
    assert refused.status_code == 409, refused.text
    assert refused.json()["errors"][0]["detail"] == "The recording was not stored."
    for answer in by_leg.values():
        assert answer.status_code == 202, answer.text
        row = await recording_row(runtime, answer.json()["data"]["id"])
        assert row.status == RecordingStatus.STORED
    assert await rows_for_connection(runtime, connection_id) == len(good)
    # the refused recording's bytes are not kept
    assert len(objects_of(runtime, account.account_id)) == len(good)


async def test_the_same_recording_twice_in_one_batch_is_one_recording(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    writer = runtime.batch_writer
    held = HeldWriter(runtime)
    await held.hold()
    meta = metadata_for(connection_id)
    audio = make_wav(0.2)
    sends = [asyncio.create_task(post_recording(api, runtime, meta, audio)) for _ in range(2)]
    await _until(lambda: writer.waiting == 2, "both ingests queued")
    commits_before = writer.commits
    await held.release()
    first, second = await asyncio.gather(*sends)

    assert writer.commits == commits_before + 2  # the holder's, then the pair's together
    assert sorted([first.status_code, second.status_code]) == [200, 202]
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    assert await rows_for_connection(runtime, connection_id) == 1
    assert len(objects_of(runtime, account.account_id)) == 1


async def test_a_lone_ingest_is_committed_at_once(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str
) -> None:
    writer = runtime.batch_writer
    commits, units = writer.commits, writer.units
    response = await post_recording(api, runtime, metadata_for(connection_id), make_wav(0.2))
    assert response.status_code == 202, response.text
    # answered: committed, alone, without waiting for company
    assert (writer.commits, writer.units) == (commits + 1, units + 1)
    await recording_row(runtime, response.json()["data"]["id"])


async def test_a_caller_cancelled_before_its_turn_runs_nothing(runtime: Runtime) -> None:
    writer = runtime.batch_writer
    ran: list[str] = []

    def work(session: Session) -> None:
        ran.append("ran")

    held = HeldWriter(runtime)
    await held.hold()
    waiting = asyncio.create_task(writer.run(work))
    await _until(lambda: writer.waiting == 1, "the unit queued")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert writer.waiting == 0
    await held.release()
    assert ran == []


async def test_ingests_in_one_batch_are_one_insert_per_table(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    """Their rows are written together (ingest.NewRow is batch_writer.Joinable): one INSERT of
    every recording and one of every saved event, however many ingests the batch holds."""
    writer = runtime.batch_writer
    held = HeldWriter(runtime)
    await held.hold()
    metas = [metadata_for(connection_id) for _ in range(4)]
    sends = [
        asyncio.create_task(post_recording(api, runtime, meta, make_wav(0.2))) for meta in metas
    ]
    await _until(lambda: writer.waiting == len(metas), "every ingest queued")
    with SqlCounter().counting(*runtime.writing_engines) as counter:
        await held.release()
        answers = await asyncio.gather(*sends)

    assert [answer.status_code for answer in answers] == [202] * len(metas)
    inserts = [s.split(" (")[0] for s in counter.statements if s.startswith("INSERT")]
    assert inserts == ["INSERT INTO recordings", "INSERT INTO webhook_events"], counter.statements
    assert await rows_for_connection(runtime, connection_id) == len(metas)
    async with runtime.sessions() as session:
        events = await session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.application_id == connection_id)
        )
    assert events == len(metas)
