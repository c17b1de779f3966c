"""Console sign-in: server-side sessions in the database, and the CSRF token bound to each.

The cookie holds a random 256-bit token; the database holds its sha256 (like API keys). The
CSRF token of a session is an HMAC of the session token, so every process derives the same one
without storing it, and it is useless without the HttpOnly cookie it was derived from.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from callvault.accounts import service as accounts
from callvault.accounts.models import Account
from callvault.console import repository
from callvault.console.models import ConsoleSession
from callvault.db import transaction, utcnow
from callvault.runtime import Runtime

SESSION_LIFETIME = timedelta(hours=12)
# over plain http (a local console): scoped to the console's paths
COOKIE_NAME = "callvault_console"
LOGIN_CSRF_COOKIE = "callvault_console_login"
# over https: the `__Host-` prefix makes the browser take the cookie only when it is Secure,
# for path=/ and without Domain, so a sibling subdomain cannot plant or widen it
SECURE_COOKIE_NAME = "__Host-callvault_console"
SECURE_LOGIN_CSRF_COOKIE = "__Host-callvault_console_login"
CSRF_FIELD = "csrf_token"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"callvault console csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, submitted: str) -> bool:
    return hmac.compare_digest(csrf_token_for(session_token).encode(), submitted.encode())


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def sign_in(runtime: Runtime, api_key: str) -> str | None:
    """A new session token for the account whose API key this is, or None."""
    if not api_key:
        return None
    async with runtime.sessions() as session:
        holder = await accounts.authenticate_key(session, api_key)
    if holder is None:
        return None
    token = new_token()
    now = utcnow()
    async with transaction(runtime.sessions) as session:
        await repository.delete_expired_sessions(session, now)
        await repository.add_session(
            session,
            ConsoleSession(
                token_hash=token_hash(token),
                account_id=holder.account.id,
                api_key_id=holder.key_id,
                created_at=now,
                expires_at=now + SESSION_LIFETIME,
            ),
        )
    return token


async def account_for(runtime: Runtime, token: str) -> tuple[Account, str] | None:
    """The signed-in account and the id of the API key it signed in with, or None for an
    unknown, ended or expired session (or one whose key was revoked)."""
    if not token:
        return None
    async with runtime.sessions() as session:
        return await repository.account_of_session(session, token_hash(token), utcnow())


async def sign_out(runtime: Runtime, token: str) -> None:
    async with transaction(runtime.sessions) as session:
        await repository.delete_session(session, token_hash(token))
