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
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.db import transaction, utcnow
from callvault.recordings.ingest import NewRecording
from callvault.recordings.models import Recording
from callvault.runtime import Handoff, Inbox, Runtime
from callvault.scratch import reclaim
from callvault.webhooks.delivery import Also, Deliverer
from callvault.webhooks.models import WebhookEvent
from callvault.webhooks.repository import DeliveryContext
from callvault.worker import repository as jobs
from callvault.worker.repository import JobModel
from callvault.worker.uploads import (
    UploadContext,
    delete_staging_copy,
    delete_staging_object,
    process_recording,
    sweep_staging_copies,
)

log = structlog.get_logger("callvault.worker")

POLL_SECS = 0.5
SWEEP_EVERY_SECS = 60.0


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
    ) -> None:
        self.runtime = runtime
        self.webhook_schedule = webhook_schedule
        self.owner = f"worker-{uuid.uuid4()}"  # one per worker, so two in a process differ too
        self.concurrency = max(1, concurrency or runtime.settings.worker_concurrency)
        # CALLVAULT_WORKER_LEASE_SECS (default 60 s): how long a dead worker's jobs wait
        self.lease_seconds = lease_seconds or runtime.settings.worker_lease_secs
        self.poll_seconds = poll_seconds
        # CALLVAULT_WORKER_DRAIN_SECS (default 10 s): on stop, how long running jobs may finish
        self.drain_seconds = drain_seconds or runtime.settings.worker_drain_secs
        self.rng = rng or random.Random()  # jitter, not a secret
        self._postgresql = runtime.engine.dialect.name == "postgresql"
        self._tasks: set[asyncio.Task[None]] = set()
        # jobs this worker holds a lease on: (model, id); the heartbeat renews them all
        self._held: dict[str, JobModel] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.deliverer: Deliverer | None = None
        self.uploads: UploadContext | None = None
        self.inbox: Inbox | None = None
        # the claim runs when work may be due that this worker was not handed: at start,
        # when work is announced, when the last claim filled every free slot, every poll
        self._claim_due = True

    # lifecycle
    async def start(self) -> None:
        # temp files of processes killed on this host (an ingest cut short, a staged copy)
        await asyncio.to_thread(reclaim_scratch, self.runtime.settings.data_dir)
        self.deliverer = Deliverer(self.runtime, rng=self.rng, schedule=self.webhook_schedule)
        self.uploads = UploadContext(self.runtime, self.owner, self.lease_seconds, rng=self.rng)
        # jobs committed by this process come in through the inbox, already leased to us
        self.inbox = Inbox(
            self.owner, self.lease_seconds, lambda: self.concurrency - len(self._tasks)
        )
        self.runtime.inbox = self.inbox
        self._loop_task = asyncio.create_task(self._run(), name=f"{self.owner} loop")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name=f"{self.owner} beat")
        log.info("worker started", owner=self.owner, concurrency=self.concurrency)

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish (up to drain_seconds); release the rest."""
        if self.inbox is not None and self.runtime.inbox is self.inbox:
            self.runtime.inbox = None  # nothing more is handed over; what is, still runs
        self._stopping.set()
        self._slot_freed.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.drain_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        assert self.inbox is not None
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_EVERY_SECS
                    self._spawn(self._sweep(), None, None)
                for job in self.inbox.take():
                    self._take(job)
                # cleared before claiming: work announced from here on wakes the next wait
                if self.runtime.work_ready.is_set() or loop.time() >= next_poll:
                    self._claim_due = True
                self.runtime.work_ready.clear()
                self._slot_freed.clear()
                free = self.concurrency - len(self._tasks) - self.inbox.reserved
                claimed: list[tuple[JobModel, str]] = []
                if self._claim_due and free > 0:
                    claimed = await self._claim(free)
                    next_poll = loop.time() + self.poll_seconds
                    # a full batch: there may be more due rows; else wait to be told (or poll)
                    self._claim_due = len(claimed) >= free
                for model, job_id in claimed:
                    self._held[job_id] = model
                    self._spawn(self._run_job(model, job_id), model, job_id)
                if len(self._tasks) >= self.concurrency:
                    await self._wait_for(self._slot_freed, self._stopping, self.inbox.ready)
                    continue
                if claimed and self._claim_due:
                    continue  # there may be more due rows than one batch
                await self._wait_for(
                    self.runtime.work_ready,
                    self._slot_freed,
                    self._stopping,
                    self.inbox.ready,
                    at_most=max(0.0, next_poll - loop.time()),
                )
            except Exception:
                # the database may be away for a moment: keep the worker alive and try again
                log.exception("worker loop error", owner=self.owner)
                self._claim_due = True
                await self._wait_for(self._stopping, at_most=self.poll_seconds)

    def _take(self, job: Handoff) -> None:
        """A job handed over by this process (leased to us in its own transaction)."""
        if job.kind == "recording" and isinstance(job.payload, NewRecording):
            self._held[job.job_id] = Recording
            self._spawn(
                self._run_handed(job.job_id, self._run_new_recording(job.payload)),
                Recording,
                job.job_id,
            )
        elif job.kind == "event" and isinstance(job.payload, DeliveryContext):
            self._held[job.job_id] = WebhookEvent
            self._spawn(
                self._run_handed(job.job_id, self._deliver_known(job.payload)),
                WebhookEvent,
                job.job_id,
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

    async def _claim(self, free: int) -> list[tuple[JobModel, str]]:
        if free <= 0:
            return []
        now = utcnow()
        until = now + timedelta(seconds=self.lease_seconds)
        claimed: list[tuple[JobModel, str]] = []
        # one transaction for both queues: one write per idle poll
        async with transaction(self.runtime.sessions) as session:
            for model in (Recording, WebhookEvent):
                ids = await jobs.claim(
                    session,
                    model,
                    owner=self.owner,
                    now=now,
                    lease_until=until,
                    limit=free - len(claimed),
                    postgresql=self._postgresql,
                )
                claimed += [(model, job_id) for job_id in ids]
        return claimed

    def _spawn(self, coro: object, model: JobModel | None, job_id: str | None) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._slot_freed.set()
            if not finished.cancelled() and finished.exception() is not None:
                log.error("job crashed", job_id=job_id, error=repr(finished.exception()))

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
            await self._process(recording_id)

    async def _run_new_recording(self, new: NewRecording) -> None:
        with structlog.contextvars.bound_contextvars(recording_id=new.recording.id):
            await self._process(new.recording.id, new)

    async def _process(self, recording_id: str, new: NewRecording | None = None) -> None:
        assert self.uploads is not None
        outcome = await process_recording(self.uploads, recording_id, new)
        # its lease was cleared with the state change (or it was not ours anymore)
        self._held.pop(recording_id, None)
        staging_key = outcome.staging_key
        if outcome.event_id is None or outcome.delivery is None:
            if outcome.event_id is not None:
                self._held[outcome.event_id] = WebhookEvent
                await self._deliver(outcome.event_id)
                self._held.pop(outcome.event_id, None)
            if staging_key is not None:
                await delete_staging_copy(self.runtime, recording_id, staging_key)
            return
        # the customer's copy is verified and committed: the staging object goes now, and
        # its key is cleared in the webhook round's own transaction (one commit fewer; a
        # crash in between is finished by the sweep, as before)
        forget: Also | None = None
        if staging_key is not None and await delete_staging_object(
            self.runtime, recording_id, staging_key
        ):

            async def forget(session: AsyncSession) -> None:
                await jobs.forget_staging_key(session, recording_id, staging_key)

        self._held[outcome.event_id] = WebhookEvent
        assert self.deliverer is not None
        await self.deliverer.deliver_known(outcome.delivery, self.owner, also=forget)
        self._held.pop(outcome.event_id, None)

    async def _deliver_known(self, context: DeliveryContext) -> None:
        assert self.deliverer is not None
        await self.deliverer.deliver_known(context, self.owner)

    async def _deliver(self, event_id: str) -> None:
        assert self.deliverer is not None
        # a round that must be retried is due later: the poll claims it then
        await self.deliverer.deliver(event_id, self.owner)

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
            except Exception:
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
