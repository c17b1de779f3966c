from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class EventStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: a 4xx that is not retried, or the schedule ran out


class WebhookEvent(Base):
    """One event to one application; the row is the delivery job. Its id never changes."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    application_id: Mapped[str] = mapped_column(String(24), index=True)
    recording_id: Mapped[str | None] = mapped_column(String(36), index=True)
    event_type: Mapped[str] = mapped_column(String(64))  # call.recording.saved / .error
    api_version: Mapped[str] = mapped_column(String(1))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """Every delivery attempt, kept: status code, latency, error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None]
    latency_ms: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # what GET /v2/webhook_deliveries shows of the exchange (migration 0004)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    request_headers: Mapped[list[Any] | None] = mapped_column(JSON)
    response_headers: Mapped[list[Any] | None] = mapped_column(JSON)
    response_body: Mapped[str | None] = mapped_column(Text)  # the first KB of the answer
