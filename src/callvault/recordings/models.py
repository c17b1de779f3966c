from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow
from callvault.recordings.lifecycle import RecordingStatus

__all__ = ["FILTERED", "Recording", "RecordingStatus"]


# columns `GET /v2/recordings` filters on (created_at keeps its own index from 0001)
FILTERED = (
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "conference_id",
    "conference_region",
    "from_number",
    "to_number",
    "sip_call_id",
    "recording_started_at",
    "recording_ended_at",
)


class Recording(Base):
    """A recording, and the job that moves it: the row is the queue entry (DESIGN.md)."""

    __tablename__ = "recordings"
    __table_args__ = (
        UniqueConstraint("connection_id", "call_leg_id", "recording_started_at"),
        Index("ix_recordings_due", "status", "next_attempt_at"),
        # the Recordings API's filters, each within one account (migration 0004)
        *(Index(f"ix_recordings_account_{column}", "account_id", column) for column in FILTERED),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    connection_id: Mapped[str] = mapped_column(String(24), index=True)
    call_control_id: Mapped[str] = mapped_column(String(128))
    call_leg_id: Mapped[str] = mapped_column(String(128))
    call_session_id: Mapped[str] = mapped_column(String(128))
    format: Mapped[str] = mapped_column(String(4))
    channels: Mapped[str] = mapped_column(String(8))
    recording_started_at: Mapped[datetime]
    recording_ended_at: Mapped[datetime]
    client_state: Mapped[str | None] = mapped_column(Text)
    custom_file_name: Mapped[str | None] = mapped_column(String(40))
    # optional call facts of Telnyx's recording object (ingest passes them through)
    from_number: Mapped[str | None] = mapped_column(String(128))
    to_number: Mapped[str | None] = mapped_column(String(128))
    conference_id: Mapped[str | None] = mapped_column(String(128))
    conference_region: Mapped[str | None] = mapped_column(String(32))
    initiated_by: Mapped[str | None] = mapped_column(String(64))
    sip_call_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16), default="call", server_default="call")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    duration_millis: Mapped[int] = mapped_column(BigInteger)
    # fixed at ingest: how the stored bytes were encrypted (null = plaintext); size_bytes and
    # sha256 are those of the stored (encrypted) bytes
    encryption_details: Mapped[dict[str, str] | None] = mapped_column(JSON)

    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.RECEIVED)
    # where the bytes are now: the default-store key while staged or kept there
    # indexed: ingest checks a new key is free (a scan per ingest without it)
    default_store_key: Mapped[str | None] = mapped_column(String(512), index=True)
    # the customer-bucket placement once stored there
    backend: Mapped[str | None] = mapped_column(String(16))
    bucket: Mapped[str | None] = mapped_column(String(255))
    object_key: Mapped[str | None] = mapped_column(String(512))
    recording_url: Mapped[str | None] = mapped_column(String(2048))
    credentials_revision: Mapped[int | None]
    error_reason: Mapped[str | None] = mapped_column(String(255))
    error_detail: Mapped[str | None] = mapped_column(Text)

    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    first_failure_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]

    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
