"""Bearer authentication: account API keys for /v2, the ingest token for /internal."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callvault.accounts import service as accounts
from callvault.accounts.keys import api_key_matches, hash_api_key
from callvault.accounts.models import Account
from callvault.errors import unauthorized
from callvault.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="An account API key")
ingest_bearer = HTTPBearer(auto_error=False, description="The ingest token", scheme_name="ingest")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    """The dependency form. Async on purpose: FastAPI runs a plain `def` dependency in its
    thread pool, a thread hop on every request (~10% of a simple GET's CPU, measured)."""
    return runtime_of(request)


async def current_account(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Account:
    if credentials is None or not credentials.credentials:
        raise unauthorized("Authentication failed: send 'Authorization: Bearer <API key>'.")
    runtime = runtime_of(request)
    key_hash = hash_api_key(credentials.credentials)
    account = runtime.accounts.get(key_hash)
    # a cached account is still compared in constant time, like one read from the database
    if account is not None and api_key_matches(credentials.credentials, account.api_key_hash):
        return account
    async with runtime.sessions() as session:
        account = await accounts.authenticate(session, credentials.credentials)
    if account is None:
        raise unauthorized("Authentication failed: the API key is not valid.")
    runtime.accounts.put(key_hash, account)
    return account


async def require_ingest_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(ingest_bearer),
) -> None:
    expected = runtime_of(request).settings.ingest_token
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise unauthorized("Authentication failed: the ingest token is not valid.")
