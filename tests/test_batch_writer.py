"""A rider of the group commit (BatchWriter.ride_along) starts no commit: it goes with the next
batch, or alone once its caller asks for its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from callvault.runtime import Runtime


def unit(name: str, ran: list[str]) -> Callable[[AsyncSession], Awaitable[str]]:
    async def work(session: AsyncSession) -> str:
        ran.append(name)
        return name

    return work


async def test_a_rider_goes_with_the_next_batch(runtime: Runtime) -> None:
    writer = runtime.batch_writer
    before = writer.commits
    ran: list[str] = []
    rider = writer.ride_along(unit("rider", ran))
    await asyncio.sleep(0.05)
    assert ran == [] and writer.commits == before
    assert await writer.run(unit("unit", ran)) == "unit"
    assert ran == ["unit", "rider"] and writer.commits == before + 1
    assert await rider.result() == "rider"
    assert writer.commits == before + 1


async def test_a_rider_nothing_took_goes_alone_when_asked(runtime: Runtime) -> None:
    writer = runtime.batch_writer
    before = writer.commits
    ran: list[str] = []
    rider = writer.ride_along(unit("rider", ran))
    assert await rider.result() == "rider"
    assert ran == ["rider"] and writer.commits == before + 1
