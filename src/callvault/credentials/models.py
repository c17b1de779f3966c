from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class StorageCredentials(Base):
    """One custom storage configuration per connection, sealed at rest (AES-256-GCM)."""

    __tablename__ = "storage_credentials"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    backend: Mapped[str] = mapped_column(String(16))
    # `{key_id}:{base64(nonce||ciphertext)}` of the configuration JSON; AAD = connection_id
    configuration_sealed: Mapped[str] = mapped_column(Text)
    # bumped on every replace: recordings that failed under an older revision are retried
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
