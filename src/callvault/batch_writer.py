"""Group commit: write transactions that are ready together share one commit (issue 24).

Each caller hands `BatchWriter.run` a unit of work (a coroutine function of a session). One
writer task per event loop takes every unit waiting, runs them one after the other in one
write transaction and commits once — one fsync for all of them — and only then answers each
caller. A caller that is answered has its rows committed, exactly as with `db.transaction`.

- No timer: a lone unit is committed as soon as the writer takes it. Units arriving while a
  commit is under way wait for it and go together in the next one; the batch grows with the
  load by itself (a database's classic group commit).
- One bad unit never fails its neighbours: when a batch fails (any unit raises, or the commit
  does), it is rolled back and every unit runs again alone, in its own transaction, so each
  caller gets its own result or its own error. A unit must therefore be safe to run again
  after a rollback (build rows inside it, not before). Except when the database is away
  (`db.database_unavailable`): that is no unit's fault, and running each alone would wait
  out one connect timeout per unit, one after the other; every unit gets the error at once
  and its caller does what it does for an outage (503 at ingest, a later retry in the
  worker).
- A caller cancelled before its unit is taken leaves the queue (nothing runs). Once taken, the
  caller waits for the batch's outcome before the cancellation goes on, so that it knows
  whether its unit ran (e.g. ingest then keeps the object a committed row points to).

- A rider (`ride_along`) is a unit that starts no commit of its own: it goes in the next batch
  that commits anyway, so a write that may come a little later (a recording's staging key
  cleared once its webhook round is recorded) costs no fsync. Its caller asks for its outcome
  when it can wait no longer (`Rider.result`); a rider no batch took by then goes at once.

A unit must not call `run` itself, nor be submitted while its caller holds a write
transaction on the same database (the writer would wait for that caller's write lock).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from callvault.db import database_unavailable, transaction

log = structlog.get_logger("callvault.db")

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[T]]

# a batch's units run one after the other: bound the wait of the last one
MAX_BATCH = 64


@dataclass(eq=False)
class _Unit(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]
    taken: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class BatchWriter:
    """One per database (Runtime.batch_writer); see the module docstring."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], max_batch: int = MAX_BATCH
    ) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._waiting: deque[_Unit[Any]] = deque()
        self._riders: deque[_Unit[Any]] = deque()
        self._writer: asyncio.Task[None] | None = None
        # what a test or a bench reads: commits made, units they carried, batches retried
        self.commits = 0
        self.units = 0
        self.split_batches = 0

    @property
    def waiting(self) -> int:
        """Units not taken into a batch yet."""
        return len(self._waiting)

    async def run(self, work: Work[T]) -> T:
        """Run `work` in a write transaction shared with whatever else is ready; return its
        result once committed (or raise its own error)."""
        unit: _Unit[T] = _Unit(work, asyncio.get_running_loop().create_future())
        self._waiting.append(unit)
        self._wake()
        return await self._outcome(unit)

    def ride_along(self, work: Work[T]) -> Rider[T]:
        """`work` in the next batch that commits anyway (see the module docstring)."""
        unit: _Unit[T] = _Unit(work, asyncio.get_running_loop().create_future())
        self._riders.append(unit)
        return Rider(self, unit)

    def _wake(self) -> None:
        if self._writer is None or self._writer.done():
            # a context of its own: the caller's (held write gates, bound log fields) is not
            # the writer's
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="callvault batch writer", context=contextvars.Context()
            )

    def _promote(self, rider: _Unit[Any]) -> None:
        """A rider no batch took yet becomes a unit like any other."""
        if not rider.taken and rider in self._riders:
            self._riders.remove(rider)
            self._waiting.append(rider)
            self._wake()

    async def _outcome(self, unit: _Unit[T]) -> T:
        try:
            return await asyncio.shield(unit.future)
        except asyncio.CancelledError:
            if not unit.taken:
                self._waiting.remove(unit)
                raise
            # taken: the unit runs (or ran) whatever happens now; let the caller know when
            # its outcome is settled
            while not unit.done.is_set():
                try:
                    await unit.done.wait()
                except asyncio.CancelledError:
                    continue
            raise

    async def _write(self) -> None:
        while self._waiting:
            batch: list[_Unit[Any]] = []
            for queue in (self._waiting, self._riders):
                while queue and len(batch) < self.max_batch:
                    unit = queue.popleft()
                    unit.taken = True
                    batch.append(unit)
            try:
                await self._commit(batch)
            except BaseException:
                # the writer itself was cancelled (the loop is closing): what waits never runs
                while self._waiting:
                    unit = self._waiting.popleft()
                    unit.taken = True
                    batch.append(unit)
                raise
            finally:
                for unit in batch:
                    if not unit.future.done():
                        unit.future.cancel()
                    unit.done.set()

    async def _commit(self, batch: list[_Unit[Any]]) -> None:
        if len(batch) > 1:
            try:
                results = []
                async with transaction(self.sessions) as session:
                    for unit in batch:
                        results.append(await unit.work(session))
            except Exception as exc:
                if database_unavailable(exc):
                    for unit in batch:
                        unit.future.set_exception(exc)
                    return
                # one unit (or the commit) failed: each runs again alone below, so that each
                # caller gets its own outcome
                self.split_batches += 1
                log.info("group commit split", units=len(batch), error_type=type(exc).__name__)
            else:
                self.commits += 1
                self.units += len(batch)
                for unit, result in zip(batch, results, strict=True):
                    unit.future.set_result(result)
                return
        for unit in batch:
            try:
                async with transaction(self.sessions) as session:
                    result = await unit.work(session)
            except Exception as exc:
                unit.future.set_exception(exc)
            else:
                self.commits += 1
                self.units += 1
                unit.future.set_result(result)


class Rider(Generic[T]):
    """A unit waiting for a batch it did not start (BatchWriter.ride_along)."""

    def __init__(self, writer: BatchWriter, unit: _Unit[T]) -> None:
        self._writer = writer
        self._unit = unit

    async def result(self) -> T:
        """Its result once committed (or its own error); a rider no batch took yet goes in the
        next one now, a commit of its own if nothing else is waiting."""
        self._writer._promote(self._unit)
        return await self._writer._outcome(self._unit)
