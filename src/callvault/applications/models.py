from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class Application(Base):
    """A Call Control application: the connection that recordings and storage settings hang on."""

    __tablename__ = "applications"
    __table_args__ = (
        Index(
            "ix_applications_account_outbound_profile", "account_id", "outbound_voice_profile_id"
        ),
    )

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
    # the rest of Telnyx's application object, stored and answered as written (migration 0004)
    anchorsite_override: Mapped[str] = mapped_column(
        String(32), default="Latency", server_default="Latency"
    )
    call_cost_in_webhooks: Mapped[bool] = mapped_column(default=False, server_default=false())
    dtmf_type: Mapped[str] = mapped_column(
        String(16), default="RFC 2833", server_default="RFC 2833"
    )
    first_command_timeout: Mapped[bool] = mapped_column(default=False, server_default=false())
    first_command_timeout_secs: Mapped[int] = mapped_column(default=30, server_default="30")
    redact_dtmf_debug_logging: Mapped[bool] = mapped_column(default=False, server_default=false())
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    inbound_channel_limit: Mapped[int | None]
    inbound_shaken_stir_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    inbound_sip_subdomain: Mapped[str | None] = mapped_column(String(63))
    inbound_sip_subdomain_receive_settings: Mapped[str] = mapped_column(
        String(32), default="from_anyone", server_default="from_anyone"
    )
    outbound_channel_limit: Mapped[int | None]
    outbound_voice_profile_id: Mapped[str | None] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
