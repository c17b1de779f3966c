"""The credentials generation: a counter database triggers bump on every change of the stored
secrets — storage credentials (migration 0006) and API keys (0008). Whatever is cached from
them (credentials' answers and held settings, the API-key cache) is checked against it. Plumbing
rather than a domain's: several domains read it, and it names only its own table.

SQLite: on the event loop itself (db.LoopReader), a few microseconds. PostgreSQL: a round trip,
shared — requests that arrive while a read is running wait for the next one and all take its
result, so under load there is one read in flight, not one per request. Sharing keeps the
guarantee a read per request gives: every request's read *started after it arrived*, so a
change committed before a GET arrived is always seen by it. (Measured on PostgreSQL, 32
connections: one read per GET cost ~0.8 ms of CPU, 0.15 x health's requests/s.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callvault.db import LoopReader
from callvault.runtime import Runtime

GENERATION_SQL = "SELECT value FROM credentials_generation WHERE id = 1"


def session_read(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], Awaitable[int]]:
    async def read() -> int:
        async with sessions() as session:
            return int((await session.execute(text(GENERATION_SQL))).scalar_one())

    return read


class GenerationReader:
    def __init__(
        self,
        loop_reader: LoopReader | None,
        read: Callable[[], Awaitable[int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`read`: one read through a session (the shared one); `loop_reader` first if any."""
        self.loop_reader = loop_reader
        self._read = read
        self._next: asyncio.Future[int] | None = None  # the read not started yet: join it
        self._reading = False
        self._driver: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly
        # (monotonic time the last successful read started, its value), for `recent`
        self._last: tuple[float, int] | None = None
        self._clock = clock

    def now(self) -> int | None:
        """The generation without waiting for anything, or None (PostgreSQL; SQLite busy)."""
        if self.loop_reader is None:
            return None
        try:
            return int(self.loop_reader.scalar(GENERATION_SQL))
        except sqlite3.Error:
            return None  # e.g. busy during recovery: a session waits where the loop must not

    def recent(self, max_age_secs: float) -> int | None:
        """The generation as of a read that started at most `max_age_secs` ago, without waiting
        (SQLite: read now), or None. For checks that may lag a change by `max_age_secs` (the
        API-key cache: accounts/cache.py) and so need no read per request on PostgreSQL."""
        generation = self.now()
        if generation is not None:
            return generation
        if self._last is not None and self._clock() - self._last[0] <= max_age_secs:
            return self._last[1]
        return None

    async def current(self) -> int:
        generation = self.now()
        if generation is not None:
            return generation
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # retrieved even when every waiter went away: no "exception never retrieved"
            self._next.add_done_callback(lambda done: done.cancelled() or done.exception())
        joined = self._next
        if not self._reading:
            self._reading = True
            self._driver = asyncio.get_running_loop().create_task(self._read_while_asked())
        # shielded: one waiter cancelled (its client went away) must not fail the others
        return await asyncio.shield(joined)

    async def _read_while_asked(self) -> None:
        try:
            while self._next is not None:
                asked, self._next = self._next, None
                try:
                    started = self._clock()
                    value = await self._read()
                    self._last = (started, value)
                    asked.set_result(value)
                except asyncio.CancelledError:
                    asked.cancel()
                    raise
                except Exception as exc:  # the waiters get it (a 503 where it is away)
                    asked.set_exception(exc)
        finally:
            self._reading = False
            if self._next is not None:  # cancelled (shutdown): nobody will read for them
                self._next.cancel()
                self._next = None


def generation_reader(runtime: Runtime) -> GenerationReader:
    """The runtime's reader: what the cached answers, the API-key cache and the worker's held
    credentials are checked against. Made on first use, on the runtime's database and its loop
    reader (runtime.py `domain_part`, `loop_reader`)."""
    return runtime.domain_part(GenerationReader, _open_reader)


def _open_reader(runtime: Runtime) -> GenerationReader:
    return GenerationReader(runtime.loop_reader, session_read(runtime.sessions))
