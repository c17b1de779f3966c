"""The worker: claims due rows of its job kinds' queues and runs them.

The database is the queue (DESIGN.md). What the queues are, and how a job runs, the entry
point says (worker/kinds.py, callvault/jobs.py): the worker knows no domain. A loop claims up
to each kind's free slots at a time with a lease (~60 s, renewed every 20 s by one heartbeat
for all held jobs), runs each job in its own task, and sleeps until new work is announced
(`runtime.work_ready`, set by whoever commits work in this process), a slot frees up, or the
poll interval (0.5 s: work committed by other processes, due retries) passes. `stop()` stops
claiming, lets running jobs finish for a while, cancels the rest and clears the leases it
still holds so that another worker takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import structlog

from callvault.db import database_unavailable, transaction, utcnow
from callvault.runtime import HandedJob, Handoff, Inbox, JobKey, Runtime
from callvault.worker import repository as queries
from callvault.worker.kinds import Chore, JobKind, Jobs, JobsFactory

log = structlog.get_logger("callvault.worker")

P = TypeVar("P")
POLL_SECS = 0.5
# jobs handed over in memory beyond the free slots, per slot (Worker._room_for)
BACKLOG_PER_SLOT = 4
LOOP_BACKOFF_CAP_SECS = 10.0


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        jobs: JobsFactory,
        *,
        lease_seconds: float | None = None,
        poll_seconds: float = POLL_SECS,
        drain_seconds: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.runtime = runtime
        self.owner = f"worker-{uuid.uuid4()}"  # one per worker, so two in a process differ too
        # CALLVAULT_WORKER_LEASE_SECS (default 60 s): how long a dead worker's jobs wait
        self.lease_seconds = lease_seconds or runtime.settings.worker_lease_secs
        self.poll_seconds = poll_seconds
        # CALLVAULT_WORKER_DRAIN_SECS (default 10 s): on stop, how long running jobs may finish
        self.drain_seconds = drain_seconds or runtime.settings.worker_drain_secs
        self.rng = rng or random.Random()  # jitter, not a secret
        self._make_jobs = jobs
        self._jobs = Jobs(kinds=())
        # by kind name: its table entry, running jobs, and jobs handed over while its slots
        # were full (see _room_for); each kind has its own bounded slots, so a slow receiver
        # cannot hold an upload slot (nor a slow bucket a delivery slot)
        self._kinds: dict[str, JobKind[Any]] = {}
        self._pools: dict[str, set[asyncio.Task[None]]] = {}
        self._queued: dict[str, deque[HandedJob]] = {}
        # the chores (sweep, retention) count for no queue
        self._chores: set[asyncio.Task[None]] = set()
        # jobs this worker holds a lease on: id -> kind name; the heartbeat renews them all
        self._held: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.inbox: Inbox | None = None
        # per kind, whether a claim may find work this worker was not handed: at start, when
        # work is announced, when the kind's last claim filled every free slot, every poll.
        # Per kind: a claim for free webhook slots that finds no event must not stop the
        # recordings' claims while their slots are full (that left freed recording slots
        # idle until the next poll: 16 recordings/s at 8 slots and a 0.5 s poll, measured)
        self._claim_due: dict[str, bool] = {}
        self._postgresql = runtime.engine.dialect.name == "postgresql"

    # lifecycle
    async def start(self) -> None:
        self._jobs = self._make_jobs(self)
        self._kinds = {kind.name: kind for kind in self._jobs.kinds}
        self._pools = {name: set() for name in self._kinds}
        self._queued = {name: deque() for name in self._kinds}
        self._claim_due = dict.fromkeys(self._kinds, True)
        await self._jobs.opening()
        # jobs committed by this process come in through the inbox, already leased to us
        self.inbox = Inbox(self.owner, self.lease_seconds, self._room_for)
        for kind in self._kinds.values():
            kind.open_door(self.inbox)
        self.runtime.inbox = self.inbox
        self._loop_task = asyncio.create_task(self._run(), name=f"{self.owner} loop")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name=f"{self.owner} beat")
        log.info(
            "worker started",
            owner=self.owner,
            **{f"{name}_concurrency": kind.concurrency for name, kind in self._kinds.items()},
        )

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish (up to drain_seconds); release the rest."""
        if self.inbox is not None and self.runtime.inbox is self.inbox:
            self.runtime.inbox = None  # nothing more is handed over; what is, still runs
        self._stopping.set()
        self._slot_freed.set()
        if self._loop_task is not None:
            await self._loop_task
        # jobs may hand others over while draining: look again until all are done
        loop = asyncio.get_running_loop()
        drain_until = loop.time() + self.drain_seconds
        while (running := self._running()) and loop.time() < drain_until:
            await asyncio.wait(running, timeout=drain_until - loop.time())
        while running := self._running():
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat_task
        await self._release_all()
        await self._flush_deferred()
        await self._jobs.closing()
        log.info("worker stopped", owner=self.owner)

    async def _flush_deferred(self) -> None:
        """What the jobs left to ride along with a later commit is written now (if it cannot
        be, the jobs' sweeps repair it: a deferred write is never urgent)."""
        try:
            await self.runtime.batch_writer.flush()
        except Exception as exc:
            log.warning("deferred writes not flushed", error_type=type(exc).__name__)

    # what the job kinds may ask (runtime.Crew)
    def hand(self, key: JobKey[P], job_id: str, payload: P) -> None:
        """A job this worker holds, from memory: run in its kind's slots (queued until one
        frees, as a hand-over through the inbox)."""
        assert self.inbox is not None
        self._take(Handoff(key, job_id, payload).bound(self.inbox))

    def run_held(self, kind: str, job_id: str) -> None:
        """A job this worker holds, known by id: run as if claimed, in its kind's slots."""
        self._take(HandedJob(kind, job_id, partial(self._kinds[kind].run_claimed, job_id)))

    # the loop
    async def _run(self) -> None:
        schedule = {chore.name: 0.0 for chore in self._jobs.chores}
        failures = 0  # consecutive failed loop turns (the database away)
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while not self._stopping.is_set():
            try:
                self._start_chores(schedule)
                next_poll = await self._turn(next_poll)
                failures = 0
            except Exception as exc:
                failures += 1
                await self._back_off(exc, failures)

    async def _turn(self, next_poll: float) -> float:
        """One turn of the loop: take what was handed over, claim for the free slots, then
        wait for a reason to look again; returns when the next poll is due."""
        assert self.inbox is not None
        loop = asyncio.get_running_loop()
        for job in self.inbox.take():
            self._take(job)
        self._start_queued()
        # cleared before claiming: work announced from here on wakes the next wait
        if self.runtime.work_ready.is_set() or loop.time() >= next_poll:
            self._claim_due = dict.fromkeys(self._kinds, True)
        self.runtime.work_ready.clear()
        self._slot_freed.clear()
        # jobs handed over or about to be come first: a claim only fills what is left
        free = {
            name: n - self.inbox.reserved.get(name, 0) - len(self._queued[name])
            for name, n in self._free().items()
        }
        wanted = {name: n for name, n in free.items() if n > 0 and self._claim_due[name]}
        claimed: list[tuple[str, str]] = []
        if wanted:
            claimed = await self._claim(wanted)
            next_poll = loop.time() + self.poll_seconds
            # a full batch: there may be more due rows; else wait to be told (or poll)
            for name, n in wanted.items():
                self._claim_due[name] = sum(1 for kind, _ in claimed if kind == name) >= n
        for kind, job_id in claimed:
            # still running here: its lease lapsed (the database was away, so the heartbeat
            # could not renew it) and the claim leased it to us again; not a second run
            if job_id not in self._held:
                self.run_held(kind, job_id)
        if not any(n > 0 for n in self._free().values()):
            await self._wait_for(self._slot_freed, self._stopping, self.inbox.ready)
        elif not (claimed and any(self._claim_due.values())):  # else: maybe more due rows
            await self._wait_for(
                self.runtime.work_ready,
                self._slot_freed,
                self._stopping,
                self.inbox.ready,
                at_most=max(0.0, next_poll - loop.time()),
            )
        return next_poll

    async def _back_off(self, exc: Exception, failures: int) -> None:
        """The database may be away for a while: keep the worker alive, back off (0.5 s, 1 s,
        2 s … 10 s) and resume by itself when it answers again."""
        self._claim_due = dict.fromkeys(self._kinds, True)
        pause = min(LOOP_BACKOFF_CAP_SECS, self.poll_seconds * 2 ** min(failures - 1, 8))
        if database_unavailable(exc):
            log.warning("database unavailable", owner=self.owner, failures=failures, retry_in=pause)
        else:
            log.exception("worker loop error", owner=self.owner)
        await self._wait_for(self._stopping, at_most=pause)

    def _start_chores(self, schedule: dict[str, float]) -> None:
        now = asyncio.get_running_loop().time()
        for chore in self._jobs.chores:
            if now >= schedule[chore.name]:
                schedule[chore.name] = now + chore.every
                self._spawn(self._run_chore(chore), None, None)

    @staticmethod
    async def _run_chore(chore: Chore) -> None:
        try:
            await chore.run()
        except Exception:
            log.exception("chore failed", chore=chore.name)

    def _take(self, job: HandedJob) -> None:
        """A job handed over by this process (leased to us in its own transaction): started
        now if its kind has a free slot, else queued until one frees (its lease renewed by
        the heartbeat meanwhile, released at stop like a running job's)."""
        self._held[job.job_id] = job.kind
        if self._free()[job.kind] > 0:
            self._start(job)
        else:
            self._queued[job.kind].append(job)

    def _start_queued(self) -> None:
        for name, queue in self._queued.items():
            while queue and self._free()[name] > 0:
                self._start(queue.popleft())

    def _start(self, job: HandedJob) -> None:
        self._spawn(self._run_job(job.job_id, job.run()), job.kind, job.job_id)

    async def _run_job(self, job_id: str, job: Awaitable[None]) -> None:
        try:
            await job
        except asyncio.CancelledError:
            raise  # still held: stop() releases its lease
        except BaseException:
            # a crashed job keeps its lease until it expires: a retry after ~lease_seconds,
            # not a hot loop on a job that crashes every time
            self._held.pop(job_id, None)
            raise
        self._held.pop(job_id, None)

    @staticmethod
    async def _wait_for(*events: asyncio.Event, at_most: float | None = None) -> None:
        """Until one of `events` is set, or `at_most` seconds pass."""
        waits = [asyncio.ensure_future(event.wait()) for event in events]
        try:
            await asyncio.wait(waits, timeout=at_most, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waits:
                waiter.cancel()

    def _room_for(self, kind: str) -> int:
        """How many more jobs of `kind` this worker takes over: its free slots plus a backlog
        of BACKLOG_PER_SLOT jobs per slot. Under load a recording committed here is then
        leased to this worker at once and waits in memory for a slot, instead of waiting
        unleased for a claim — one more write transaction per recording (10.5 statements and
        3.7 fsynced commits per custom-storage recording in a burst of 3 x the slots, instead
        of 8 and 3: tests/worker/test_statement_budget.py). Bounded: beyond it rows wait
        unleased, and a claim takes them a batch per transaction. The cost of the backlog:
        after a crash its jobs wait for their leases to expire."""
        room = (1 + BACKLOG_PER_SLOT) * self._kinds[kind].concurrency
        return room - len(self._pools[kind]) - len(self._queued[kind])

    def _free(self) -> dict[str, int]:
        return {
            name: kind.concurrency - len(self._pools[name]) for name, kind in self._kinds.items()
        }

    def _running(self) -> set[asyncio.Task[None]]:
        return set().union(self._chores, *self._pools.values())

    async def _claim(self, wanted: dict[str, int]) -> list[tuple[str, str]]:
        """Up to `wanted[kind]` due jobs of each kind named, leased to this worker."""
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        claimed: list[tuple[str, str]] = []
        # one transaction for every queue: one write per idle poll
        async with transaction(self.runtime.sessions) as session:
            for name, limit in wanted.items():
                ids = await queries.claim(
                    session,
                    self._kinds[name].queue,
                    owner=self.owner,
                    now=now,
                    lease_until=until,
                    limit=limit,
                    postgresql=self._postgresql,
                )
                claimed += [(name, job_id) for job_id in ids]
        return claimed

    def _spawn(self, coro: Coroutine[Any, Any, None], kind: str | None, job_id: str | None) -> None:
        """Run `coro` in `kind`'s slots (None: a chore)."""
        pool = self._chores if kind is None else self._pools[kind]
        task: asyncio.Task[None] = asyncio.create_task(coro)
        pool.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            pool.discard(finished)
            self._slot_freed.set()
            if not finished.cancelled() and finished.exception() is not None:
                error = finished.exception()
                log.error("job crashed", job_id=job_id, error_type=type(error).__name__)

        task.add_done_callback(done)

    # leases
    async def _heartbeat(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
            except Exception as exc:
                if database_unavailable(exc):
                    log.warning("lease renewal failed: database unavailable", owner=self.owner)
                else:
                    log.exception("lease renewal failed", owner=self.owner)

    def _held_by_kind(self, held: dict[str, str]) -> dict[str, list[str]]:
        return {name: [i for i, k in held.items() if k == name] for name in self._kinds}

    async def _renew(self) -> None:
        held = dict(self._held)
        if not held:
            return
        until = utcnow() + timedelta(seconds=self.lease_seconds)
        async with transaction(self.runtime.sessions) as session:
            for name, ids in self._held_by_kind(held).items():
                model = self._kinds[name].queue.model
                kept = await queries.renew(session, model, ids, owner=self.owner, lease_until=until)
                for lost in set(ids) - kept:
                    # finished meanwhile (lease cleared) or taken over after an expiry
                    log.debug("lease not renewed", job_id=lost)

    async def _release_all(self) -> None:
        held = dict(self._held)
        self._held.clear()
        if not held:
            return
        async with transaction(self.runtime.sessions) as session:
            for name, ids in self._held_by_kind(held).items():
                model = self._kinds[name].queue.model
                await queries.release(session, model, ids, owner=self.owner)
        log.info("leases released", owner=self.owner, count=len(held))


async def run_until_signalled(runtime: Runtime, make_worker: Callable[[Runtime], Worker]) -> None:
    """`callvault worker`: run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = make_worker(runtime)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await runtime.close()
