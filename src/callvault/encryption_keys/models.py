from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class RecordingEncryptionKey(Base):
    """A customer's RSA public key that recordings of its applications are encrypted for.

    Only the public key is stored (re-serialized, so nothing else the request held is kept).
    """

    __tablename__ = "recording_encryption_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    public_key_pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    key_size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
