from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # sha256 of the API key: the key itself is shown once and never stored
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_public_key: Mapped[str] = mapped_column(String(64))
    # the Ed25519 private key, sealed with the account id as associated data
    webhook_private_key_sealed: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
