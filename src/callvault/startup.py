"""What `serve` and `worker` check before they start, so a configuration mistake stops the
process where it was made — one line naming the fix, exit 1 — instead of turning into 500s or
retried jobs later (issue 26):

- on PostgreSQL: CALLVAULT_ENCRYPTION_KEYS is set (no process invents a key of its own) and
  the database is at the migrations' head (`callvault migrate` applies them; embedded SQLite
  migrates itself);
- in every mode: the keys open the stored data (credentials/keycheck.py).

A database that does not answer yet is waited for (DATABASE_WAIT_SECS), as orchestrators
start a service and its database together."""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy.engine import make_url

from callvault.config import NO_KEYS, ConfigurationError, Settings
from callvault.credentials.keycheck import KeysDoNotOpenData, check_keys
from callvault.crypto import KeyError_, KeyRing
from callvault.db import (
    current_revision_async,
    database_sessions,
    database_unavailable,
    head_revision,
    migrate,
    revisions_between,
)

log = structlog.get_logger("callvault.startup")
DATABASE_WAIT_SECS = 30.0


def shown_url(database_url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of it
        return "CALLVAULT_DATABASE_URL"


def check_before_start(settings: Settings) -> None:
    """Raise ConfigurationError when this process must not start; migrate embedded SQLite."""
    if settings.is_embedded_database:
        migrate(settings.database_url)
    elif not settings.encryption_keys_b64:
        raise ConfigurationError(NO_KEYS)
    try:
        keyring = settings.keyring
    except KeyError_ as exc:  # a malformed key
        raise ConfigurationError(str(exc)) from None
    asyncio.run(_check_database(settings, keyring))


async def _check_database(settings: Settings, keyring: KeyRing) -> None:
    deadline = time.monotonic() + DATABASE_WAIT_SECS
    while True:
        try:
            current = await current_revision_async(settings.database_url)
            break
        except Exception as exc:
            if not database_unavailable(exc) or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the database at {shown_url(settings.database_url)} does not answer "
                    f"({type(exc).__name__}): check CALLVAULT_DATABASE_URL"
                ) from None
            log.warning("waiting for the database", error_type=type(exc).__name__)
            await asyncio.sleep(1.0)
    head = head_revision()
    if current != head:
        pending = revisions_between(current, head)
        raise ConfigurationError(
            f"the database at {shown_url(settings.database_url)} has {len(pending)} pending "
            f"migration(s) ({', '.join(pending)}): run `callvault migrate` first"
        )
    try:
        async with database_sessions(settings.database_url) as sessions, sessions() as session:
            await check_keys(session, keyring)
    except KeysDoNotOpenData as exc:
        raise ConfigurationError(str(exc)) from None
