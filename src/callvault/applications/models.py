from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class Application(Base):
    """A Call Control application: the connection that recordings and storage settings hang on."""

    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)  # numeric string, like Telnyx
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    application_name: Mapped[str] = mapped_column(String(255))
    webhook_event_url: Mapped[str] = mapped_column(String(2048))
    webhook_event_failover_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_api_version: Mapped[str] = mapped_column(String(1), default="1")
    webhook_timeout_secs: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True)
    # ours: recordings ingested from now on are encrypted for this key (null = off)
    recording_encryption_key_id: Mapped[str | None] = mapped_column(
        String(36),
        ForeignKey(
            "recording_encryption_keys.id", name="fk_applications_recording_encryption_key_id"
        ),
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
