from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    webhook_public_key: Mapped[str] = mapped_column(String(64))
    # the Ed25519 private key, sealed with the account id as associated data
    webhook_private_key_sealed: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """One of an account's API keys (migration 0008_review): several per account, so a key can
    be rotated (create the new one, move clients, revoke the old one). Revoking deletes the
    row; the console sessions signed in with it go with it (ON DELETE CASCADE)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200))
    # sha256 of the key: the key itself is shown once and never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # written at most once a minute per key and process (accounts/cache.py)
    last_used_at: Mapped[datetime | None]


@dataclass(frozen=True)
class KeyHolder:
    """Who an API key signs in: the account, and which of its keys it is."""

    account: Account
    key_id: str
