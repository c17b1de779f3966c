"""The backlog an operator watches: recordings per state, webhook events waiting or given up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.moments import as_utc
from callvault.recordings.models import Recording, RecordingStatus
from callvault.webhooks.models import EventStatus, WebhookEvent


@dataclass(frozen=True)
class Backlog:
    recordings_by_state: dict[str, int]
    events_pending: int
    events_failed: int
    events_delivered: int
    oldest_pending_recording_at: datetime | None
    oldest_pending_event_at: datetime | None

    def oldest_pending_age_seconds(self, now: datetime) -> float:
        """Age of the oldest unfinished job (recording or event); 0 when nothing waits."""
        candidates = [
            t for t in (self.oldest_pending_recording_at, self.oldest_pending_event_at) if t
        ]
        return max(0.0, (now - min(candidates)).total_seconds()) if candidates else 0.0

    def as_json(self, now: datetime) -> dict[str, object]:
        return {
            "recordings": self.recordings_by_state,
            "webhook_events": {
                "pending": self.events_pending,
                "failed": self.events_failed,
                "delivered": self.events_delivered,
            },
            "oldest_pending_age_seconds": round(self.oldest_pending_age_seconds(now), 3),
        }


async def read_backlog(session: AsyncSession, account_id: str | None = None) -> Backlog:
    """The whole instance's backlog, or one account's (the console's overview)."""
    mine_r = [Recording.account_id == account_id] if account_id is not None else []
    mine_e = [WebhookEvent.account_id == account_id] if account_id is not None else []
    by_state = {state.value: 0 for state in RecordingStatus}
    rows = await session.execute(
        select(Recording.status, func.count()).where(*mine_r).group_by(Recording.status)
    )
    for state, count in rows:
        by_state[state] = count
    events = {
        status: count
        for status, count in await session.execute(
            select(WebhookEvent.status, func.count()).where(*mine_e).group_by(WebhookEvent.status)
        )
    }
    oldest_recording = await session.scalar(
        select(func.min(Recording.created_at)).where(
            Recording.status == RecordingStatus.RECEIVED, *mine_r
        )
    )
    oldest_event = await session.scalar(
        select(func.min(WebhookEvent.created_at)).where(
            WebhookEvent.status == EventStatus.PENDING, *mine_e
        )
    )
    return Backlog(
        recordings_by_state=by_state,
        events_pending=events.get(EventStatus.PENDING, 0),
        events_failed=events.get(EventStatus.FAILED, 0),
        events_delivered=events.get(EventStatus.DELIVERED, 0),
        oldest_pending_recording_at=_aware(oldest_recording),
        oldest_pending_event_at=_aware(oldest_event),
    )


def _aware(value: datetime | None) -> datetime | None:
    # aggregate functions bypass the column type, so SQLite hands back naive (UTC) values
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)
