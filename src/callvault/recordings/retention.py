"""Default-store recordings are kept for CALLVAULT_RECORDING_RETENTION_DAYS when it is set
(unset: forever). Older ones — stored in the default store, or failed and kept there — have
their object deleted and their row marked `deleted` (error_detail says why), in batches.
Recordings in a customer's bucket are the customer's: never touched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select

from callvault.db import transaction
from callvault.metrics import RECORDINGS_EXPIRED
from callvault.recordings import transitions
from callvault.recordings.lifecycle import Event, RecordingStatus, change
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.storage.base import StorageError

log = structlog.get_logger("callvault.recordings")

ENV = "CALLVAULT_RECORDING_RETENTION_DAYS"
BATCH = 100


@dataclass(frozen=True)
class RecordingRetention:
    days: float | None = None  # None: keep forever

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RecordingRetention:
        raw = environ.get(ENV, "").strip()
        if not raw:
            return cls(days=None)
        days = float(raw)
        if days <= 0:
            raise ValueError(f"{ENV} must be a positive number of days (unset: keep forever)")
        return cls(days=days)

    def cutoff(self, now: datetime) -> datetime | None:
        return None if self.days is None else now - timedelta(days=self.days)


def expired_detail(days: float) -> str:
    return f"deleted after {days:g} days in the default store ({ENV})"


async def expire_recordings(
    runtime: Runtime, retention: RecordingRetention, now: datetime, *, batch: int = BATCH
) -> int:
    """Delete default-store recordings received before the cutoff; returns how many."""
    cutoff = retention.cutoff(now)
    if cutoff is None or retention.days is None:
        return 0
    postgresql = runtime.engine.dialect.name == "postgresql"
    expired = 0
    while True:
        async with transaction(runtime.sessions) as session:
            query = (
                select(Recording)
                .where(
                    Recording.created_at < cutoff,
                    Recording.backend.is_(None),  # not in a customer's bucket
                    Recording.default_store_key.is_not(None),
                    Recording.status.in_([RecordingStatus.STORED, RecordingStatus.FAILED]),
                )
                .order_by(Recording.created_at)
                .limit(batch)
            )
            if postgresql:  # two workers expiring at once pass over each other's rows
                query = query.with_for_update(skip_locked=True)
            rows = list((await session.scalars(query)).all())
            done = 0
            for recording in rows:
                assert recording.default_store_key is not None
                try:
                    await runtime.default_store.delete(recording.default_store_key)
                except StorageError as exc:
                    log.warning(
                        "expired recording not deleted yet",
                        recording_id=recording.id,
                        detail=exc.reason,
                    )
                    continue
                expiry = change(
                    recording.status, Event.DELETED, error_detail=expired_detail(retention.days)
                )
                transitions.apply_to(recording, expiry)
                done += 1
        expired += done
        if len(rows) < batch or done == 0:
            break
    RECORDINGS_EXPIRED.inc(expired)
    if expired:
        log.info("recordings expired", count=expired, older_than_days=retention.days)
    return expired
