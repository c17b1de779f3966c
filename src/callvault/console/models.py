from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from callvault.db import Base, utcnow


class ConsoleSession(Base):
    """A signed-in console visitor. The cookie carries a random token; only its sha256 is
    stored, so a copy of the database does not sign anyone in. Rows live in the database so
    that every `serve --no-worker` process behind a load balancer knows every session."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    # the API key the visitor signed in with: revoking it ends the session (ON DELETE
    # CASCADE, and account_of_session joins it); null only for rows of before 0008_review
    # that had no key to point at
    api_key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
