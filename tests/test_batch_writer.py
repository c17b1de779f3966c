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


async def test_on_postgresql_a_unit_does_not_wait_for_the_batch_under_way(
    runtime: Runtime,
) -> None:
    """While one batch is still committing, a new unit goes in a batch of its own where the
    database commits side by side (PostgreSQL); on SQLite it waits for the next batch."""
    postgresql = runtime.engine.dialect.name == "postgresql"
    assert runtime.batch_writer.in_flight == (4 if postgresql else 1)
    writer = BatchWriter(runtime.sessions, in_flight=runtime.batch_writer.in_flight)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(session: AsyncSession) -> str:
        await session.execute(text("SELECT 1"))
        started.set()
        await release.wait()
        return "slow"

    async def quick(session: AsyncSession) -> str:
        await session.execute(text("SELECT 1"))
        return "quick"

    slow_task = asyncio.create_task(writer.run(slow))
    await started.wait()
    quick_task = asyncio.create_task(writer.run(quick))
    if postgresql:
        assert await asyncio.wait_for(quick_task, 10) == "quick"
        assert not slow_task.done()
    else:
        await asyncio.sleep(0.1)  # room for a second writer, were there one
        assert writer.waiting == 1 and not quick_task.done()
    release.set()
    assert await slow_task == "slow"
    assert await quick_task == "quick"
