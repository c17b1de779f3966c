"""Bearer authentication: account API keys for /v2, the ingest token for /internal."""

from __future__ import annotations

import hmac

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from callvault.accounts import repository as accounts_repository
from callvault.accounts import service as accounts
from callvault.accounts.cache import REVOCATION_LAG_SECS, account_cache
from callvault.accounts.keys import hash_api_key
from callvault.accounts.models import Account, KeyHolder
from callvault.db import transaction, utcnow
from callvault.errors import unauthorized
from callvault.generation import generation_reader
from callvault.runtime import Runtime

log = structlog.get_logger()
ingest_bearer = HTTPBearer(auto_error=False, description="The ingest token", scheme_name="ingest")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    """The dependency form. Async on purpose: FastAPI runs a plain `def` dependency in its
    thread pool, a thread hop on every request (~10% of a simple GET's CPU, measured)."""
    return runtime_of(request)


def cached_key(runtime: Runtime, api_key: str, generation: int) -> KeyHolder | None:
    """The account and key id of `api_key` from this process's cache (accounts/cache.py), or
    None. A key cached at another credentials generation is looked up again (it may have been
    revoked)."""
    # the stored hash is not compared again: the cache is keyed by the full hash itself
    return account_cache(runtime).get(hash_api_key(api_key), generation)


async def mark_used(runtime: Runtime, key_id: str) -> None:
    """Write the key's last_used_at, at most once a minute per key in this process. Awaited,
    not left running: it costs a write once a minute and keeps nothing in flight after the
    answer. A failure is logged and does not fail the request."""
    if not account_cache(runtime).use_mark_due(key_id):
        return
    try:
        async with transaction(runtime.sessions) as session:
            await accounts_repository.mark_used(session, key_id, utcnow())
    except Exception as exc:  # the database being away is answered by the route itself
        log.warning("api key last use not recorded", error=type(exc).__name__)


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
        api_key = credentials.credentials
        # read before the key: a revocation committed in between leaves the entry labelled
        # with the older generation, so it is looked up again next time; a read up to
        # REVOCATION_LAG_SECS old will do (revocations wait that long: accounts/cache.py)
        reader = generation_reader(runtime)
        generation = reader.recent(REVOCATION_LAG_SECS)
        if generation is None:
            generation = await reader.current()
        key_hash = hash_api_key(api_key)
        keys = account_cache(runtime)
        holder = keys.get(key_hash, generation)
        if holder is None:
            async with runtime.sessions() as session:
                holder = await accounts.authenticate_key(session, api_key)
            if holder is None:
                raise unauthorized("Authentication failed: the API key is not valid.")
            keys.put(key_hash, holder, generation)
        await mark_used(runtime, holder.key_id)
        return holder.account


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
