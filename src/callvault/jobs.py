"""The entry points' wiring of the domains: who hears of what, and the worker's job table
(which queues it claims from, how each job runs, its chores). Only entry points import this
module: the worker knows no domain, and no domain knows the worker."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog

from callvault.credentials import events as credential_events
from callvault.db import database_unavailable, utcnow
from callvault.recordings.handoffs import EVENT_JOB, RECORDING_JOB
from callvault.recordings.lifecycle import RecordingStatus
from callvault.recordings.models import Recording
from callvault.recordings.pipeline import RecordingJobs, UploadContext, sweep_staging_copies
from callvault.recordings.redelivery import requeue_for_new_credentials
from callvault.recordings.retention import RecordingRetention, expire_recordings
from callvault.recordings.service import default_store_link
from callvault.runtime import Crew, Runtime
from callvault.scratch import reclaim
from callvault.webhooks.delivery import Deliverer
from callvault.webhooks.models import EventStatus, WebhookEvent
from callvault.webhooks.repository import DeliveryContext
from callvault.webhooks.retention import WebhookRetention, prune_webhooks
from callvault.worker.kinds import Chore, JobKind, Jobs, Queue
from callvault.worker.runner import POLL_SECS, Worker

log = structlog.get_logger("callvault.worker")

SWEEP_EVERY_SECS = 60.0
RETENTION_EVERY_SECS = 600.0
RECORDINGS = Queue(Recording, RecordingStatus.RECEIVED, tenant="connection_id")
EVENTS = Queue(WebhookEvent, EventStatus.PENDING, tenant="application_id")


def wire_domains() -> None:
    """New or replaced custom-storage credentials put the connection's failed recordings back
    on the queue (credentials announce; recordings act)."""
    credential_events.subscribe(requeue_for_new_credentials)


def make_worker(
    runtime: Runtime,
    *,
    concurrency: int | None = None,
    delivery_concurrency: int | None = None,
    lease_seconds: float | None = None,
    poll_seconds: float = POLL_SECS,
    drain_seconds: float | None = None,
    rng: random.Random | None = None,
    webhook_schedule: tuple[float, ...] | None = None,
    retention_every: float = RETENTION_EVERY_SECS,
) -> Worker:
    """A worker for recordings (uploads) and their webhook events (deliveries)."""
    wire_domains()
    table = RecordingWork(
        runtime,
        upload_slots=max(1, concurrency or runtime.settings.worker_concurrency),
        delivery_slots=max(1, delivery_concurrency or runtime.settings.delivery_concurrency),
        webhook_schedule=webhook_schedule,
        retention_every=retention_every,
    )
    return Worker(
        runtime,
        table.jobs,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
        drain_seconds=drain_seconds,
        rng=rng,
    )


class RecordingWork:
    """The job table of a worker: its settings are read when it is made (invalid values stop
    the start), its runners when the worker starts (they hold the worker's lease owner)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        upload_slots: int,
        delivery_slots: int,
        webhook_schedule: tuple[float, ...] | None,
        retention_every: float,
    ) -> None:
        self.runtime = runtime
        self.upload_slots = upload_slots
        self.delivery_slots = delivery_slots
        self.webhook_schedule = webhook_schedule
        self.retention_every = retention_every
        # each domain reads its own retention setting
        self.webhook_retention = WebhookRetention.from_env(runtime.settings.environ)
        self.recording_retention = RecordingRetention.from_env(runtime.settings.environ)

    def jobs(self, crew: Crew) -> Jobs:
        runtime = self.runtime
        uploads = UploadContext(runtime, crew.owner, crew.lease_seconds, rng=crew.rng)
        recordings = RecordingJobs(uploads, crew)
        deliverer = Deliverer(
            runtime,
            fresh_link=partial(default_store_link, runtime),
            rng=crew.rng,
            schedule=self.webhook_schedule,
        )
        events = EventJobs(deliverer, crew)
        return Jobs(
            kinds=(
                JobKind(
                    RECORDING_JOB,
                    RECORDINGS,
                    self.upload_slots,
                    recordings.run_claimed,
                    recordings.run_handed,
                ),
                JobKind(
                    EVENT_JOB, EVENTS, self.delivery_slots, events.run_claimed, events.run_handed
                ),
            ),
            chores=(
                Chore("staging sweep", SWEEP_EVERY_SECS, self.sweep),
                Chore("retention", self.retention_every, self.retention),
            ),
            # temp files of processes killed on this host (an ingest cut short, a staged copy)
            opening=self.reclaim_scratch,
            closing=events.deliverer.aclose,
        )

    async def reclaim_scratch(self) -> None:
        await asyncio.to_thread(reclaim_scratch, self.runtime.settings.data_dir)

    async def sweep(self) -> None:
        try:
            await sweep_staging_copies(self.runtime)
        except Exception:
            log.exception("staging sweep failed")

    async def retention(self) -> None:
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


def reclaim_scratch(data_dir: Path) -> None:
    for name in ("incoming", "staging"):
        reclaim(data_dir / name)


@dataclass
class EventJobs:
    """The webhook event job kind's runners: one delivery round each."""

    deliverer: Deliverer
    crew: Crew

    async def run_claimed(self, event_id: str) -> None:
        # a round that must be retried is due later: the poll claims it then
        await self.deliverer.deliver(event_id, self.crew.owner)

    async def run_handed(self, context: DeliveryContext) -> None:
        await self.deliverer.deliver_known(context, self.crew.owner)
