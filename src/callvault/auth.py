"""Bearer authentication: account API keys for /v2, the ingest token for /internal."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callvault.accounts import service as accounts
from callvault.accounts.keys import hash_api_key
from callvault.accounts.models import Account
from callvault.errors import unauthorized
from callvault.runtime import Runtime

ingest_bearer = HTTPBearer(auto_error=False, description="The ingest token", scheme_name="ingest")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    """The dependency form. Async on purpose: FastAPI runs a plain `def` dependency in its
    thread pool, a thread hop on every request (~10% of a simple GET's CPU, measured)."""
    return runtime_of(request)


def cached_account(runtime: Runtime, api_key: str) -> Account | None:
    """The account of `api_key` from this process's cache (accounts/cache.py), or None."""
    key_hash = hash_api_key(api_key)
    account = runtime.accounts.get(key_hash)
    # still compared in constant time, like a hash read from the database
    if account is not None and hmac.compare_digest(key_hash, account.api_key_hash):
        return account
    return None


class AccountBearer(HTTPBearer):
    """The account of the request's API key, as one dependency: `HTTPBearer` reads the header
    and this resolves the key in the same call. As two dependencies (the header, then the
    account) FastAPI's dependency solving was the largest cost of a cached GET
    (bench/credentials_load.py, docs/performance.md). OpenAPI still shows the HTTPBearer scheme."""

    async def __call__(self, request: Request) -> Account:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None or not credentials.credentials:
            raise unauthorized("Authentication failed: send 'Authorization: Bearer <API key>'.")
        runtime = runtime_of(request)
        account = cached_account(runtime, credentials.credentials)
        if account is not None:
            return account
        key_hash = hash_api_key(credentials.credentials)
        async with runtime.sessions() as session:
            account = await accounts.authenticate(session, credentials.credentials)
        if account is None:
            raise unauthorized("Authentication failed: the API key is not valid.")
        runtime.accounts.put(key_hash, account)
        return account


current_account = AccountBearer(
    auto_error=False, description="An account API key", scheme_name="HTTPBearer"
)


async def require_ingest_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(ingest_bearer),
) -> None:
    expected = runtime_of(request).settings.ingest_token
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise unauthorized("Authentication failed: the ingest token is not valid.")
