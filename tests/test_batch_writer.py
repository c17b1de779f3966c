"""Deferred units of the group commit: they ride along with the next batch, or commit alone
after a short wait, and their failure fails no one else."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.batch_writer import BatchWriter
from callvault.runtime import Runtime


def _writer(runtime: Runtime, defer_secs: float) -> BatchWriter:
    return BatchWriter(runtime.sessions, defer_secs=defer_secs)


async def test_a_deferred_unit_rides_along_with_the_next_commit(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)
    ran: list[str] = []

    async def deferred(session: AsyncSession) -> None:
        await session.execute(text("SELECT 1"))
        ran.append("deferred")

    async def urgent(session: AsyncSession) -> str:
        ran.append("urgent")
        return "done"

    writer.defer(deferred)
    assert writer.deferred == 1 and ran == []
    assert await writer.run(urgent) == "done"
    assert sorted(ran) == ["deferred", "urgent"]
    assert (writer.commits, writer.units, writer.deferred) == (1, 2, 0)


async def test_a_lone_deferred_unit_commits_after_its_wait(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=0.05)
    ran = asyncio.Event()

    async def deferred(session: AsyncSession) -> None:
        ran.set()

    writer.defer(deferred)
    await asyncio.wait_for(ran.wait(), timeout=5)
    assert writer.deferred == 0


async def test_flush_commits_what_is_deferred(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)
    ran: list[int] = []

    async def deferred(session: AsyncSession) -> None:
        ran.append(1)

    writer.defer(deferred)
    writer.defer(deferred)
    await writer.flush()
    assert ran == [1, 1] and writer.commits == 1 and writer.deferred == 0
    await writer.flush()  # nothing deferred: no commit
    assert writer.commits == 1


async def test_a_failing_deferred_unit_fails_no_caller(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)

    async def broken(session: AsyncSession) -> None:
        raise RuntimeError("a bug")

    async def urgent(session: AsyncSession) -> int:
        return 7

    writer.defer(broken)
    assert await writer.run(urgent) == 7
    assert writer.split_batches == 1 and writer.deferred == 0


class _Held:
    """A unit that keeps its batch (and the writer taking it) open until released."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, session: AsyncSession) -> str:
        self.running.set()
        await self.gate.wait()
        return "held"


async def _recorded(ran: list[str], name: str, session: AsyncSession) -> str:
    await session.execute(text("SELECT 1"))
    ran.append(name)
    return name


async def test_an_express_unit_does_not_wait_for_a_slow_batch(runtime: Runtime) -> None:
    """A webhook round's record behind a batch that stays open: after `express_after` a second
    writer commits it (PostgreSQL: two writers can commit at once)."""
    if runtime.engine.dialect.name != "postgresql":
        assert runtime.batch_writer.express_after is None  # one writer's lock: nothing to gain
        return
    writer = BatchWriter(runtime.sessions, express_after=0.01)
    held = _Held()
    slow = asyncio.create_task(writer.run(held))
    await held.running.wait()
    ran: list[str] = []
    record = writer.run(lambda session: _recorded(ran, "record", session), express=True)
    assert await asyncio.wait_for(record, timeout=30) == "record"
    assert not slow.done() and writer.express_batches == 1
    held.gate.set()
    assert await slow == "held"
    assert (writer.commits, writer.units) == (2, 2)


async def test_express_units_go_first_and_ride_along_with_a_prompt_batch(
    runtime: Runtime,
) -> None:
    """The batch under way ends before `express_after`: the express unit goes with the next
    batch, ahead of what queued before it, and no second writer starts (no extra commit)."""
    writer = BatchWriter(runtime.sessions, max_batch=1, express_after=60.0)
    held = _Held()
    slow = asyncio.create_task(writer.run(held))
    await held.running.wait()
    ran: list[str] = []
    plain = asyncio.create_task(writer.run(lambda session: _recorded(ran, "plain", session)))
    record = asyncio.create_task(
        writer.run(lambda session: _recorded(ran, "record", session), express=True)
    )
    await asyncio.sleep(0)  # both tasks take their first step: queued, in this order
    assert writer.waiting == 2
    held.gate.set()
    assert await asyncio.gather(slow, plain, record) == ["held", "plain", "record"]
    assert ran == ["record", "plain"]
    assert (writer.commits, writer.express_batches) == (3, 0)
