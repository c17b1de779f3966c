"""Webhook history does not grow without bound: events that are finished (delivered or
failed) and older than CALLVAULT_WEBHOOK_RETENTION_DAYS (default 30), and attempts older than
that, are deleted in batches (short transactions: the API and the workers keep going).
Pending events are never pruned: they are still work."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import delete, select

from callvault.db import transaction
from callvault.metrics import WEBHOOK_ATTEMPTS_PRUNED, WEBHOOK_EVENTS_PRUNED
from callvault.runtime import Runtime
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent

log = structlog.get_logger("callvault.webhooks")

ENV = "CALLVAULT_WEBHOOK_RETENTION_DAYS"
DEFAULT_DAYS = 30.0
BATCH = 500


@dataclass(frozen=True)
class WebhookRetention:
    days: float = DEFAULT_DAYS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WebhookRetention:
        raw = environ.get(ENV, "").strip()
        days = float(raw) if raw else DEFAULT_DAYS
        if days <= 0:
            raise ValueError(f"{ENV} must be a positive number of days")
        return cls(days=days)

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)


@dataclass(frozen=True)
class Pruned:
    events: int = 0
    attempts: int = 0


async def prune_webhooks(
    runtime: Runtime, retention: WebhookRetention, now: datetime, *, batch: int = BATCH
) -> Pruned:
    """Delete finished events created before the cutoff (with their attempts), then attempts
    older than the cutoff; `batch` rows per transaction."""
    cutoff = retention.cutoff(now)
    events = attempts = 0
    while True:
        async with transaction(runtime.sessions) as session:
            ids = list(
                (
                    await session.scalars(
                        select(WebhookEvent.id)
                        .where(
                            WebhookEvent.created_at < cutoff,
                            WebhookEvent.status.in_([EventStatus.DELIVERED, EventStatus.FAILED]),
                        )
                        .limit(batch)
                    )
                ).all()
            )
            if ids:
                gone = await session.execute(
                    delete(WebhookAttempt).where(WebhookAttempt.event_id.in_(ids))
                )
                attempts += int(gone.rowcount)  # type: ignore[attr-defined]
                await session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(ids)))
                events += len(ids)
        if len(ids) < batch:
            break
    while True:
        async with transaction(runtime.sessions) as session:
            old = list(
                (
                    await session.scalars(
                        select(WebhookAttempt.id)
                        .where(WebhookAttempt.created_at < cutoff)
                        .limit(batch)
                    )
                ).all()
            )
            if old:
                await session.execute(delete(WebhookAttempt).where(WebhookAttempt.id.in_(old)))
                attempts += len(old)
        if len(old) < batch:
            break
    WEBHOOK_EVENTS_PRUNED.inc(events)
    WEBHOOK_ATTEMPTS_PRUNED.inc(attempts)
    if events or attempts:
        log.info(
            "webhook history pruned",
            events=events,
            attempts=attempts,
            older_than_days=retention.days,
        )
    return Pruned(events=events, attempts=attempts)
