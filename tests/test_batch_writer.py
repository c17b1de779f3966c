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
