"""GenerationReader's sharing of reads (pure concurrency logic, a controllable read): shared
by the requests waiting at once, and never older than a request's arrival."""

from __future__ import annotations

import asyncio

import pytest

from callvault.generation import GenerationReader


class GatedRead:
    """A read that returns `value` when released; counts how many were started."""

    def __init__(self) -> None:
        self.started = 0
        self.value = 0
        self.failure: Exception | None = None
        self._gates: list[asyncio.Event] = []
        self._changed = asyncio.Condition()

    async def __call__(self) -> int:
        gate = asyncio.Event()
        self._gates.append(gate)
        async with self._changed:
            self.started += 1
            self._changed.notify_all()
        value = self.value  # what the database holds when the read starts
        await gate.wait()
        if self.failure is not None:
            raise self.failure
        return value

    async def release(self, reads: int) -> None:
        """Let read number `reads` finish once it has started (fails if it never starts)."""
        await self.started_at_least(reads)
        self._gates[reads - 1].set()

    async def started_at_least(self, reads: int) -> None:
        async with asyncio.timeout(5), self._changed:
            await self._changed.wait_for(lambda: self.started >= reads)


async def test_waiters_share_one_read_that_began_after_they_arrived() -> None:
    read = GatedRead()
    reader = GenerationReader(None, read)
    read.value = 1
    first = asyncio.create_task(reader.current())
    await read.started_at_least(1)
    # a change commits while the first read runs; five GETs arrive after it
    read.value = 2
    later = [asyncio.create_task(reader.current()) for _ in range(5)]
    await asyncio.sleep(0)
    await read.release(1)
    assert await first == 1
    await read.release(2)
    assert await asyncio.gather(*later) == [2] * 5  # not the read that began before them
    assert read.started == 2  # one more read for all five


async def test_a_failed_read_reaches_its_waiters_and_the_next_read_runs() -> None:
    read = GatedRead()
    reader = GenerationReader(None, read)
    read.failure = ConnectionError("database away")
    waiters = [asyncio.create_task(reader.current()) for _ in range(3)]
    await read.release(1)
    for waiter in waiters:
        with pytest.raises(ConnectionError):
            await waiter
    read.failure, read.value = None, 7
    again = asyncio.create_task(reader.current())
    await read.release(2)
    assert await again == 7


async def test_a_cancelled_waiter_does_not_cancel_the_read_of_the_others() -> None:
    read = GatedRead()
    reader = GenerationReader(None, read)
    read.value = 3
    leaving, staying = (asyncio.create_task(reader.current()) for _ in range(2))
    await read.started_at_least(1)
    leaving.cancel()
    await read.release(1)
    assert await staying == 3
    assert leaving.cancelled()


async def test_recent_is_a_read_that_started_at_most_that_long_ago() -> None:
    now = [100.0]
    read = GatedRead()
    reader = GenerationReader(None, read, clock=lambda: now[0])
    assert reader.recent(1.0) is None  # nothing read yet
    read.value = 7
    pending = asyncio.create_task(reader.current())
    await read.started_at_least(1)
    now[0] = 100.5  # the read takes a while: its age counts from its start
    await read.release(1)
    assert await pending == 7
    assert reader.recent(1.0) == 7
    now[0] = 101.0
    assert reader.recent(1.0) == 7
    now[0] = 101.01
    assert reader.recent(1.0) is None  # older than allowed: the caller reads again
    read.failure = RuntimeError("database away")
    failing = asyncio.create_task(reader.current())
    await read.release(2)
    with pytest.raises(RuntimeError):
        await failing
    assert reader.recent(1.0) is None  # a failed read is no newer value
