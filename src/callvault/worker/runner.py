"""The worker: claims due rows (recordings to move, webhook events to send) and runs them.

The database is the queue (DESIGN.md). A loop claims up to `concurrency` jobs at a time with a
lease (~60 s, renewed every 20 s by one heartbeat for all held jobs), runs each in its own
task, and sleeps until new work is announced (`runtime.work_ready`, set by ingest in this
process), a slot frees up, or the poll interval (0.5 s: work committed by other processes, due
retries) passes. `stop()` stops claiming, lets running jobs finish for a while, cancels the rest
and clears the leases it still holds so that another worker takes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import uuid
from collections import deque
from collections.abc import Coroutine, Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.batch_writer import Rider
from callvault.db import database_unavailable, transaction, utcnow
from callvault.recordings.ingest import NewRecording
from callvault.recordings.models import Recording
from callvault.recordings.retention import RecordingRetention, expire_recordings
from callvault.recordings.service import default_store_link
from callvault.runtime import Handoff, Inbox, Runtime
from callvault.scratch import reclaim
from callvault.webhooks.delivery import Deliverer
from callvault.webhooks.models import WebhookEvent
from callvault.webhooks.repository import DeliveryContext
from callvault.webhooks.retention import WebhookRetention, prune_webhooks
from callvault.worker import repository as jobs
from callvault.worker.repository import JobModel
from callvault.worker.uploads import (
    Outcome,
    UploadContext,
    delete_staging_copy,
    delete_staging_object,
    process_recording,
    record_crash,
    sweep_staging_copies,
)

log = structlog.get_logger("callvault.worker")

POLL_SECS = 0.5
# jobs handed over in memory beyond the free slots, per slot (Worker._room_for)
BACKLOG_PER_SLOT = 4
# the inbox's name for each queue (runtime.Handoff.kind)
KINDS: dict[JobModel, str] = {Recording: "recording", WebhookEvent: "event"}
MODELS: dict[str, JobModel] = {kind: model for model, kind in KINDS.items()}
SWEEP_EVERY_SECS = 60.0
LOOP_BACKOFF_CAP_SECS = 10.0
RETENTION_EVERY_SECS = 600.0
DELIVERY_CONCURRENCY = 16


def delivery_concurrency_from(environ: Mapping[str, str]) -> int:
    """CALLVAULT_DELIVERY_CONCURRENCY: webhook rounds per worker at a time (default 16)."""
    value = int(environ.get("CALLVAULT_DELIVERY_CONCURRENCY") or DELIVERY_CONCURRENCY)
    if value < 1:
        raise ValueError("CALLVAULT_DELIVERY_CONCURRENCY must be at least 1")
    return value


def reclaim_scratch(data_dir: Path) -> None:
    for name in ("incoming", "staging"):
        reclaim(data_dir / name)


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int | None = None,
        lease_seconds: float | None = None,
        poll_seconds: float = POLL_SECS,
        drain_seconds: float | None = None,
        rng: random.Random | None = None,
        webhook_schedule: tuple[float, ...] | None = None,
        retention_every: float = RETENTION_EVERY_SECS,
        delivery_concurrency: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.webhook_schedule = webhook_schedule
        self.owner = f"worker-{uuid.uuid4()}"  # one per worker, so two in a process differ too
        # uploads and deliveries have their own bounded slots: a slow receiver cannot hold
        # an upload slot (nor a slow bucket a delivery slot)
        self.concurrency = max(1, concurrency or runtime.settings.worker_concurrency)
        self.delivery_concurrency = max(
            1, delivery_concurrency or delivery_concurrency_from(runtime.settings.environ)
        )
        self.limits: dict[JobModel, int] = {
            Recording: self.concurrency,
            WebhookEvent: self.delivery_concurrency,
        }
        # CALLVAULT_WORKER_LEASE_SECS (default 60 s): how long a dead worker's jobs wait
        self.lease_seconds = lease_seconds or runtime.settings.worker_lease_secs
        self.poll_seconds = poll_seconds
        # CALLVAULT_WORKER_DRAIN_SECS (default 10 s): on stop, how long running jobs may finish
        self.drain_seconds = drain_seconds or runtime.settings.worker_drain_secs
        self.rng = rng or random.Random()  # jitter, not a secret
        # each domain reads its own retention setting (invalid values stop the start)
        self.webhook_retention = WebhookRetention.from_env(runtime.settings.environ)
        self.recording_retention = RecordingRetention.from_env(runtime.settings.environ)
        self.retention_every = retention_every
        self._postgresql = runtime.engine.dialect.name == "postgresql"
        # running jobs per queue, and the chores (sweep, retention) that count for neither
        self._pools: dict[JobModel, set[asyncio.Task[None]]] = {
            Recording: set(),
            WebhookEvent: set(),
        }
        self._chores: set[asyncio.Task[None]] = set()
        # jobs handed over while their queue's slots were full (see _room_for)
        self._queued: dict[JobModel, deque[Handoff]] = {Recording: deque(), WebhookEvent: deque()}
        # jobs this worker holds a lease on: (model, id); the heartbeat renews them all
        self._held: dict[str, JobModel] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.deliverer: Deliverer | None = None
        self.uploads: UploadContext | None = None
        self.inbox: Inbox | None = None
        # per queue, whether a claim may find work this worker was not handed: at start, when
        # work is announced, when the queue's last claim filled every free slot, every poll.
        # Per queue: a claim for free webhook slots that finds no event must not stop the
        # recordings' claims while their slots are full (that left freed recording slots
        # idle until the next poll: 16 recordings/s at 8 slots and a 0.5 s poll, measured)
        self._claim_due = dict.fromkeys(self._pools, True)

    # lifecycle
    async def start(self) -> None:
        # temp files of processes killed on this host (an ingest cut short, a staged copy)
        await asyncio.to_thread(reclaim_scratch, self.runtime.settings.data_dir)
        self.deliverer = Deliverer(
            self.runtime,
            fresh_link=partial(default_store_link, self.runtime),
            rng=self.rng,
            schedule=self.webhook_schedule,
        )
        self.uploads = UploadContext(self.runtime, self.owner, self.lease_seconds, rng=self.rng)
        # jobs committed by this process come in through the inbox, already leased to us
        self.inbox = Inbox(self.owner, self.lease_seconds, self._room_for)
        self.runtime.inbox = self.inbox
        self._loop_task = asyncio.create_task(self._run(), name=f"{self.owner} loop")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name=f"{self.owner} beat")
        log.info(
            "worker started",
            owner=self.owner,
            concurrency=self.concurrency,
            delivery_concurrency=self.delivery_concurrency,
        )

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish (up to drain_seconds); release the rest."""
        if self.inbox is not None and self.runtime.inbox is self.inbox:
            self.runtime.inbox = None  # nothing more is handed over; what is, still runs
        self._stopping.set()
        self._slot_freed.set()
        if self._loop_task is not None:
            await self._loop_task
        # uploads may hand deliveries over while draining: look again until all are done
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
        if self.deliverer is not None:
            await self.deliverer.aclose()
        log.info("worker stopped", owner=self.owner)

    # the loop
    async def _run(self) -> None:
        next_sweep = next_retention = 0.0
        failures = 0  # consecutive failed loop turns (the database away)
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        assert self.inbox is not None
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_EVERY_SECS
                    self._spawn(self._sweep(), None, None, self._chores)
                if loop.time() >= next_retention:
                    next_retention = loop.time() + self.retention_every
                    self._spawn(self._retention(), None, None, self._chores)
                for job in self.inbox.take():
                    self._take(job)
                self._start_queued()
                # cleared before claiming: work announced from here on wakes the next wait
                if self.runtime.work_ready.is_set() or loop.time() >= next_poll:
                    self._claim_due = dict.fromkeys(self._pools, True)
                self.runtime.work_ready.clear()
                self._slot_freed.clear()
                # jobs handed over or about to be come first: a claim only fills what is left
                free = {
                    model: n - self.inbox.reserved.get(KINDS[model], 0) - len(self._queued[model])
                    for model, n in self._free().items()
                }
                wanted = {m: n for m, n in free.items() if n > 0 and self._claim_due[m]}
                claimed: list[tuple[JobModel, str]] = []
                if wanted:
                    claimed = await self._claim(wanted)
                    next_poll = loop.time() + self.poll_seconds
                    # a full batch: there may be more due rows; else wait to be told (or poll)
                    for model, n in wanted.items():
                        self._claim_due[model] = sum(1 for m, _ in claimed if m is model) >= n
                failures = 0
                for model, job_id in claimed:
                    self._held[job_id] = model
                    self._spawn(self._run_job(model, job_id), model, job_id, self._pools[model])
                if not any(n > 0 for n in self._free().values()):
                    await self._wait_for(self._slot_freed, self._stopping, self.inbox.ready)
                    continue
                if claimed and any(self._claim_due.values()):
                    continue  # there may be more due rows than one batch
                await self._wait_for(
                    self.runtime.work_ready,
                    self._slot_freed,
                    self._stopping,
                    self.inbox.ready,
                    at_most=max(0.0, next_poll - loop.time()),
                )
            except Exception as exc:
                # the database may be away for a while: keep the worker alive, back off
                # (0.5 s, 1 s, 2 s … 10 s) and resume by itself when it answers again
                failures += 1
                self._claim_due = dict.fromkeys(self._pools, True)
                pause = min(LOOP_BACKOFF_CAP_SECS, self.poll_seconds * 2 ** min(failures - 1, 8))
                if database_unavailable(exc):
                    log.warning(
                        "database unavailable", owner=self.owner, failures=failures, retry_in=pause
                    )
                else:
                    log.exception("worker loop error", owner=self.owner)
                await self._wait_for(self._stopping, at_most=pause)

    def _take(self, job: Handoff) -> None:
        """A job handed over by this process (leased to us in its own transaction): started
        now if its queue has a free slot, else queued until one frees (its lease renewed by
        the heartbeat meanwhile, released at stop like a running job's)."""
        model = MODELS[job.kind]
        self._held[job.job_id] = model
        if self._free()[model] > 0:
            self._start(job)
        else:
            self._queued[model].append(job)

    def _start_queued(self) -> None:
        for model, queue in self._queued.items():
            while queue and self._free()[model] > 0:
                self._start(queue.popleft())

    def _start(self, job: Handoff) -> None:
        if job.kind == "recording" and isinstance(job.payload, NewRecording):
            self._spawn(
                self._run_handed(job.job_id, self._run_new_recording(job.payload)),
                Recording,
                job.job_id,
                self._pools[Recording],
            )
        elif job.kind == "event" and isinstance(job.payload, DeliveryContext):
            self._spawn_delivery(job.payload)

    def _spawn_delivery(
        self, context: DeliveryContext, staging_released: Rider[None] | None = None
    ) -> None:
        """A delivery round from memory, in a delivery slot."""
        event_id = context.event.id
        self._held[event_id] = WebhookEvent
        self._spawn(
            self._run_handed(event_id, self._deliver_known(context, staging_released)),
            WebhookEvent,
            event_id,
            self._pools[WebhookEvent],
        )

    async def _run_handed(self, job_id: str, job: Coroutine[Any, Any, None]) -> None:
        """As `_run_job`: a cancelled job stays held (stop() releases its lease)."""
        try:
            await job
        except asyncio.CancelledError:
            raise
        except BaseException:
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
        """How many more jobs of the inbox's `kind` ("recording" or "event") this worker takes
        over: its free slots plus a backlog of BACKLOG_PER_SLOT jobs per slot. Under load a
        recording committed here is then leased to this worker at once and waits in memory for
        a slot, instead of waiting unleased for a claim — one more write transaction per
        recording (10.5 statements and 3.7 fsynced commits per custom-storage recording in a
        burst of 3 x the slots, instead of 8 and 3: tests/worker/test_statement_budget.py).
        Bounded: beyond it rows wait unleased, and a claim takes them a batch per transaction.
        The cost of the backlog: after a crash its jobs wait for their leases to expire."""
        model = MODELS[kind]
        room = (1 + BACKLOG_PER_SLOT) * self.limits[model]
        return room - len(self._pools[model]) - len(self._queued[model])

    def _free(self) -> dict[JobModel, int]:
        return {model: self.limits[model] - len(pool) for model, pool in self._pools.items()}

    def _running(self) -> set[asyncio.Task[None]]:
        return set().union(self._chores, *self._pools.values())

    async def _claim(self, wanted: dict[JobModel, int]) -> list[tuple[JobModel, str]]:
        """Up to `wanted[model]` due jobs of each queue named, leased to this worker."""
        if not any(n > 0 for n in wanted.values()):
            return []
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        claimed: list[tuple[JobModel, str]] = []
        # one transaction for both queues: one write per idle poll
        async with transaction(self.runtime.sessions) as session:
            for model, limit in wanted.items():
                ids = await jobs.claim(
                    session,
                    model,
                    owner=self.owner,
                    now=now,
                    lease_until=until,
                    limit=limit,
                    postgresql=self._postgresql,
                )
                claimed += [(model, job_id) for job_id in ids]
        return claimed

    def _spawn(
        self,
        coro: object,
        model: JobModel | None,
        job_id: str | None,
        pool: set[asyncio.Task[None]],
    ) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        pool.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            pool.discard(finished)
            self._slot_freed.set()
            if not finished.cancelled() and finished.exception() is not None:
                error = finished.exception()
                log.error("job crashed", job_id=job_id, error_type=type(error).__name__)

        task.add_done_callback(done)

    async def _run_job(self, model: JobModel, job_id: str) -> None:
        try:
            if model is Recording:
                await self._run_recording(job_id)
            else:
                await self._deliver(job_id)
        except asyncio.CancelledError:
            raise  # still held: stop() releases its lease
        except BaseException:
            # a crashed job keeps its lease until it expires: a retry after ~lease_seconds,
            # not a hot loop on a job that crashes every time
            self._held.pop(job_id, None)
            raise
        self._held.pop(job_id, None)

    async def _run_recording(self, recording_id: str) -> None:
        assert self.uploads is not None
        # every log line of this job (upload, webhook, staging copy) names the recording
        with structlog.contextvars.bound_contextvars(recording_id=recording_id):
            try:
                outcome = await process_recording(self.uploads, recording_id)
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing can be written now: the lease expires, the job comes back
                # a bug of ours: counted and scheduled like any failure (bounded, visible)
                outcome = await record_crash(self.uploads, recording_id, exc)
            await self._follow_up(recording_id, outcome)

    async def _run_new_recording(self, new: NewRecording) -> None:
        """A recording handed over by ingest (leased to us, in memory: no claim, no read)."""
        assert self.uploads is not None
        recording_id = new.recording.id
        with structlog.contextvars.bound_contextvars(recording_id=recording_id):
            try:
                outcome = await process_recording(self.uploads, recording_id, new)
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing can be written now: the lease expires, the job comes back
                outcome = await record_crash(self.uploads, recording_id, exc)
            await self._follow_up(recording_id, outcome)

    async def _follow_up(self, recording_id: str, outcome: Outcome) -> None:
        """Send the event the state change made, and delete the staging copy."""
        # its lease was cleared with the state change (or it was not ours anymore)
        self._held.pop(recording_id, None)
        staging_key = outcome.staging_key
        if outcome.event_id is not None and outcome.delivery is not None:
            # the round from memory; the customer's copy is verified and committed, so the
            # staging object goes now and its key is cleared in the commit that records the
            # round (a rider of the group commit: no commit of its own; a crash in between is
            # finished by the sweep, as before)
            released: Rider[None] | None = None
            if staging_key is not None and await delete_staging_object(
                self.runtime, recording_id, staging_key
            ):

                async def forget(session: AsyncSession) -> None:
                    await jobs.forget_staging_key(session, recording_id, staging_key)

                released = self.runtime.batch_writer.ride_along(forget)
            self._spawn_delivery(outcome.delivery, released)
            return
        if outcome.event_id is not None:
            # the event is leased to this worker already: sent at once, in a delivery slot
            # (a slow receiver never holds the upload slot)
            event_id = outcome.event_id
            self._held[event_id] = WebhookEvent
            self._spawn(
                self._run_job(WebhookEvent, event_id),
                WebhookEvent,
                event_id,
                self._pools[WebhookEvent],
            )
        if staging_key is not None:
            # the customer's copy is verified and committed: the staging copy can go
            await delete_staging_copy(self.runtime, recording_id, staging_key)

    async def _deliver_known(
        self, context: DeliveryContext, staging_released: Rider[None] | None = None
    ) -> None:
        assert self.deliverer is not None
        try:
            await self.deliverer.deliver_known(context, self.owner)
        finally:
            if staging_released is not None:
                await _settle(staging_released)

    async def _deliver(self, event_id: str) -> None:
        assert self.deliverer is not None
        # a round that must be retried is due later: the poll claims it then
        await self.deliverer.deliver(event_id, self.owner)

    async def _retention(self) -> None:
        """Nothing grows without bound: old webhook history, expired default-store recordings."""
        now = utcnow()
        try:
            await prune_webhooks(self.runtime, self.webhook_retention, now)
            await expire_recordings(self.runtime, self.recording_retention, now)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("retention skipped: database unavailable")
            else:
                log.exception("retention failed")

    async def _sweep(self) -> None:
        try:
            await sweep_staging_copies(self.runtime)
        except Exception:
            log.exception("staging sweep failed")

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

    async def _renew(self) -> None:
        held = dict(self._held)
        if not held:
            return
        until = utcnow() + timedelta(seconds=self.lease_seconds)
        async with transaction(self.runtime.sessions) as session:
            for model in (Recording, WebhookEvent):
                ids = [job_id for job_id, m in held.items() if m is model]
                kept = await jobs.renew(session, model, ids, owner=self.owner, lease_until=until)
                for lost in set(ids) - kept:
                    # finished meanwhile (lease cleared) or taken over after an expiry
                    log.debug("lease not renewed", job_id=lost)

    async def _release_all(self) -> None:
        held = dict(self._held)
        self._held.clear()
        if not held:
            return
        async with transaction(self.runtime.sessions) as session:
            for model in (Recording, WebhookEvent):
                ids = [job_id for job_id, m in held.items() if m is model]
                await jobs.release(session, model, ids, owner=self.owner)
        log.info("leases released", owner=self.owner, count=len(held))


async def _settle(staging_released: Rider[None]) -> None:
    """Wait for the staging key's clearing; if it failed, the sweep clears it later."""
    try:
        await staging_released.result()
    except Exception as exc:
        log.warning("staging key not cleared yet", error_type=type(exc).__name__)


async def run_until_signalled(runtime: Runtime) -> None:
    """`callvault worker`: run until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = Worker(runtime)
    await worker.start()
    try:
        await stop.wait()
    finally:
        await worker.stop()
        await runtime.close()
