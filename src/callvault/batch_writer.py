"""Group commit: write transactions that are ready together share one commit (issue 24).

Each caller hands `BatchWriter.run` a unit of work (a synchronous function of a session). One
writer task per event loop takes every unit waiting, runs them one after the other in one
write transaction and commits once — one fsync for all of them — and only then answers each
caller. A caller that is answered has its rows committed, exactly as with `db.transaction`.
The transaction is the writer's `db.WriteTransactions`: on SQLite in a file, the whole batch
in one hop to a thread of its own (`db.ThreadWrites`); elsewhere an async session's greenlet.

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

- `run(..., express=True)` is for a unit whose wait costs something outside (a webhook round's
  record: until it commits, a crash sends the round again). It never waits for a commit it is
  not part of:
  - while a small batch (at most JOIN_AT_MOST units) runs its units, it joins that batch
    before its commit;
  - otherwise, given `express_writes` (a database with more than one writer: PostgreSQL),
    a second writer takes it at once through those. The runtime's are in autocommit, one
    round trip, so an express unit must be one statement there (atomic alone). The
    exception: a main writer that is idle with deferred units to carry starts a batch of
    both;
  - without them (SQLite: a second writer would only wait for the first one's lock), it goes
    first in the next batch.
- A unit whose type has `write_together(session, units)` (a `Joinable`) is written with the
  others of its type in its batch by that one call: one statement per table for all of them
  instead of one per unit (each statement is a round trip; on a busy event loop a slow one).
  Alone (its batch split, or no other of its kind), it is called as any unit.
- `defer` takes a unit nobody waits for (e.g. forgetting a deleted staging copy's key: a crash
  before it commits is repaired by a sweep): it rides along with the next batch, or, if
  nothing else commits within DEFER_SECS, is committed alone. Its failure is logged.

A unit must not call `run` itself, nor be submitted while its caller holds a write
transaction on the same database (the writer would wait for that caller's write lock).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar, cast

import structlog
from sqlalchemy.orm import Session

from callvault.db import Write, WriteTransactions, database_unavailable, settled
from callvault.metrics import GROUP_COMMIT_UNITS, GROUP_COMMITS

log = structlog.get_logger("callvault.db")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Work = Write[T]

# a batch's units run one after the other: bound the wait of the last one
MAX_BATCH = 64
# how long a deferred unit waits for a batch to ride along with before it commits alone
DEFER_SECS = 1.0
# the most units a batch may hold for an express unit to join it: the rest of a small batch
# ends soon, a large one's is a long wait (docs/performance.md, "Sixth pass")
JOIN_AT_MOST = 8


@dataclass(eq=False)
class _Unit(Generic[T]):
    work: Work[T]
    future: asyncio.Future[T]
    taken: bool = False


class BatchWriter:
    """One per database (Runtime.batch_writer); see the module docstring."""

    def __init__(
        self,
        writes: WriteTransactions,
        max_batch: int = MAX_BATCH,
        defer_secs: float = DEFER_SECS,
        express_writes: WriteTransactions | None = None,
    ) -> None:
        self.writes = writes
        self.express_writes = express_writes
        self.max_batch = max_batch
        self.defer_secs = defer_secs
        self._express: deque[_Unit[Any]] = deque()
        self._waiting: deque[_Unit[Any]] = deque()
        self._deferred: deque[_Unit[None]] = deque()
        # what the main writer takes, first to last
        self._queues: tuple[deque[_Unit[Any]], ...] = (
            (self._waiting, self._deferred)
            if express_writes is not None
            else (self._express, self._waiting, self._deferred)
        )
        # a batch takes late express units on the thread that runs it (db.ThreadWrites),
        # while a cancelled caller may take its unit back on the event loop's
        self._taking = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        # the main writer's batch is small and running its units: an express unit queued now
        # joins it
        self._joinable = False
        self._writer: asyncio.Task[None] | None = None
        self._express_writer: asyncio.Task[None] | None = None
        # what a test or a bench reads: commits made, units they carried, batches retried,
        # batches the express writer wrote
        self.commits = 0
        self.units = 0
        self.split_batches = 0
        self.express_batches = 0

    @property
    def waiting(self) -> int:
        """Units not taken into a batch yet."""
        return len(self._waiting) + len(self._express)

    @property
    def deferred(self) -> int:
        """Deferred units not committed yet."""
        return len(self._deferred)

    def defer(self, work: Work[None]) -> None:
        """Commit `work` with the next batch, or alone after `defer_secs`; nobody waits."""
        loop = asyncio.get_running_loop()
        unit: _Unit[None] = _Unit(work, loop.create_future())
        unit.future.add_done_callback(_log_deferred_failure)
        self._deferred.append(unit)
        if self._timer is None:
            self._timer = loop.call_later(self.defer_secs, self._flush_deferred)

    async def flush(self) -> None:
        """Commit the deferred units now (before the process stops)."""
        if self._deferred:
            await self.run(_nothing)

    def _flush_deferred(self) -> None:
        self._timer = None
        if self._deferred:
            self._start_writer()

    def _start_writer(self, express: bool = False) -> None:
        main_idle = self._writer is None or self._writer.done()
        if express and self.express_writes is not None and self._goes_express(main_idle):
            if self._express_writer is None or self._express_writer.done():
                self._express_writer = _writer_task(
                    self._write_express(self.express_writes), "callvault express writer"
                )
        elif main_idle:
            self._writer = _writer_task(self._write(), "callvault batch writer")

    def _goes_express(self, main_idle: bool) -> bool:
        """Whether the express writer takes an express unit now. Not when the batch under way
        can still take it, nor when the main writer is idle with deferred units to carry: a
        batch of both is one commit, not two."""
        return not self._joinable and not (main_idle and self._deferred)

    async def run(self, work: Work[T], express: bool = False) -> T:
        """Run `work` in a write transaction shared with whatever else is ready; return its
        result once committed (or raise its own error). `express`: see the module docstring."""
        loop = asyncio.get_running_loop()
        unit: _Unit[T] = _Unit(work, loop.create_future())
        queue = self._express if express else self._waiting
        queue.append(unit)
        self._start_writer(express)
        try:
            return await asyncio.shield(unit.future)
        except asyncio.CancelledError:
            with self._taking:
                if not unit.taken:
                    queue.remove(unit)
                    raise
            # taken: the unit runs (or ran) whatever happens now; let the caller know when
            # its outcome is settled
            await settled(unit.future)
            raise

    async def _write(self) -> None:
        while any(self._queues):
            try:
                await self._write_batch(self._queues, self.writes, joinable=True)
            finally:
                self._close_to_late()

    async def _write_express(self, writes: WriteTransactions) -> None:
        while self._express:
            await self._write_batch((self._express,), writes)
            self.express_batches += 1

    def _close_to_late(self) -> None:
        """The main batch commits now: express units queued from here on go to the express
        writer (or, without one, first in the next batch)."""
        self._joinable = False
        if self._express:
            self._start_writer(express=True)

    async def _write_batch(
        self,
        queues: tuple[deque[_Unit[Any]], ...],
        writes: WriteTransactions,
        joinable: bool = False,
    ) -> None:
        """`joinable`: the main writer's batch, which express units may join if it is small
        (the express writer's never is)."""
        batch: list[_Unit[Any]] = []
        for queue in queues:
            while len(batch) < self.max_batch and (unit := self._take(queue)) is not None:
                batch.append(unit)
        if joinable:
            self._joinable = len(batch) <= JOIN_AT_MOST
        try:
            await self._commit(batch, writes, joined=joinable and self._joinable)
        except BaseException:
            # the writer itself was cancelled (the loop is closing): what waits never runs
            for queue in queues:
                while (unit := self._take(queue)) is not None:
                    batch.append(unit)
            raise
        finally:
            for unit in batch:
                if not unit.future.done():
                    unit.future.cancel()

    async def _commit(
        self, batch: list[_Unit[Any]], writes: WriteTransactions, joined: bool
    ) -> None:
        """`joined`: express units queued meanwhile join this batch before its commit."""
        try:
            try:
                results = await writes.write(partial(self._run_batch, batch, joined))
            finally:
                if joined:
                    self._close_to_late()
        except Exception as exc:
            if database_unavailable(exc) or len(batch) == 1:
                for unit in batch:
                    unit.future.set_exception(exc)
                return
            # one unit (or the commit) failed: each runs again alone below, so that each
            # caller gets its own outcome
            self.split_batches += 1
            log.info("group commit split", units=len(batch), error_type=type(exc).__name__)
        else:
            self._committed(len(batch))
            for unit, result in zip(batch, results, strict=True):
                unit.future.set_result(result)
            return
        for unit in batch:
            try:
                result = await writes.write(unit.work)
            except Exception as exc:
                unit.future.set_exception(exc)
            else:
                self._committed(1)
                unit.future.set_result(result)

    def _committed(self, units: int) -> None:
        self.commits += 1
        self.units += units
        GROUP_COMMITS.inc()
        GROUP_COMMIT_UNITS.inc(units)

    def _run_batch(self, batch: list[_Unit[Any]], joined: bool, session: Session) -> list[Any]:
        """In the batch's transaction (on the writes' thread): its units, then, if `joined`,
        the express units queued meanwhile."""
        results = _run_together(session, [unit.work for unit in batch])
        return results + self._join_late(session, batch) if joined else results

    def _join_late(self, session: Session, batch: list[_Unit[Any]]) -> list[Any]:
        """Express units queued while this batch ran join it before its commit (into `batch`):
        their wait is the rest of this batch, not the next one too."""
        results: list[Any] = []
        while self._express and len(batch) < self.max_batch:
            joined: list[_Unit[Any]] = []
            while len(batch) + len(joined) < self.max_batch:
                if (unit := self._take(self._express)) is None:
                    break
                joined.append(unit)
            batch.extend(joined)
            results += _run_together(session, [unit.work for unit in joined])
        return results

    def _take(self, queue: deque[_Unit[Any]]) -> _Unit[Any] | None:
        """The first unit of `queue`, taken (its caller can no longer withdraw it); None if
        the queue is empty (its last unit may just have been withdrawn)."""
        with self._taking:
            if not queue:
                return None
            unit = queue.popleft()
            unit.taken = True
        return unit


class Joinable(Protocol[T_co]):
    """A unit that can also be written together with the others of its type."""

    def __call__(self, session: Session) -> T_co: ...

    @classmethod
    def write_together(cls, session: Session, units: list[Any]) -> list[Any]:
        """Write `units` (all of this type); return their results in order."""
        ...


def _run_together(session: Session, works: list[Work[Any]]) -> list[Any]:
    """Run a batch's units in one transaction: the `Joinable` ones by type, in one call each
    at the place of the first of their type; the others one after the other."""
    groups: dict[type, list[int]] = {}
    for index, work in enumerate(works):
        if hasattr(type(work), "write_together"):
            groups.setdefault(type(work), []).append(index)
    results: list[Any] = [None] * len(works)
    for index, work in enumerate(works):
        members = groups.get(type(work))
        if members is None:
            results[index] = work(session)
        elif members[0] == index:
            joinable = cast(type[Joinable[Any]], type(work))
            written = joinable.write_together(session, [works[i] for i in members])
            for member, result in zip(members, written, strict=True):
                results[member] = result
    return results


def _writer_task(write: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    # a context of its own: the caller's (held write gates, bound log fields) is not the
    # writer's
    return asyncio.get_running_loop().create_task(write, name=name, context=contextvars.Context())


def _nothing(session: Session) -> None:
    """A unit that writes nothing: `flush` makes the deferred units' batch with it."""


def _log_deferred_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.warning("deferred write failed", error_type=type(error).__name__)
