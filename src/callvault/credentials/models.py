from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, Text
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


class ExternalId(Base):
    """The ExternalId callvault generated for a connection, for the trust policy of a customer's
    IAM role. Made on first use (aws_role_setup or credentials with role_arn), before any
    credentials exist, and kept when they are replaced or deleted; never chosen by the customer.
    Not a secret (AWS: it guards against the confused deputy, it does not authenticate)."""

    __tablename__ = "storage_external_ids"

    connection_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(96), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CredentialsGeneration(Base):
    """One row (id 1) whose value database triggers bump on every insert, update or delete of
    storage_credentials (migration 0006), whoever makes it: the API caches rendered answers
    against it (credentials/answers.py)."""

    __tablename__ = "credentials_generation"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
