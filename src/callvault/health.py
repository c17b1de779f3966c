"""`GET /health`: liveness (the process answers). `GET /ready`: readiness, for load balancers,
orchestrators and the image's health check — 200 only when

- `database`: the database answers and is at the migrations' head;
- `default_store`: the default store's bucket exists and can be written (a small object put
  and deleted; a pass cached for STORE_CHECK_SECS, so probes do not write on every call);
- `keys`: the encryption keys open the stored data (the check app.py registers: this module
  is plumbing and knows no domain; a pass cached for KEYS_CHECK_SECS).

No auth; a failing check names itself with a short fixed phrase, never error text (it could
name hosts): the log line says more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from callvault.db import head_revision, session_revision
from callvault.errors import DATABASE_RETRY_AFTER_SECS
from callvault.runtime import Runtime
from callvault.storage.base import StorageError, StorageErrorKind

router = APIRouter()
log = structlog.get_logger("callvault.health")

CHECK_TIMEOUT_SECS = 3.0
STORE_CHECK_SECS = 5.0
KEYS_CHECK_SECS = 30.0
# a key no recording ever has (keys start with an account id)
PROBE_KEY = "callvault-readiness-probe"

# a check answers None when fine, else the phrase that names what is wrong
Check = Callable[[Runtime], Awaitable[str | None]]


@dataclass
class Readiness:
    """The app's checks beyond the database and the store, and the cached verdicts."""

    extra: dict[str, tuple[Check, float]] = field(default_factory=dict)
    cached: dict[str, tuple[float, str]] = field(default_factory=dict)

    def add(self, name: str, check: Check, cache_secs: float) -> None:
        self.extra[name] = (check, cache_secs)


@router.get("/health", tags=["health"], summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _database(runtime: Runtime) -> str | None:
    async with runtime.sessions() as session:
        await session.execute(text("SELECT 1"))
        if await session_revision(session) != head_revision():
            return "migrations pending (run callvault migrate)"
    return None


async def _default_store(runtime: Runtime) -> str | None:
    store = runtime.default_store
    try:
        await store.put_file(
            PROBE_KEY, b"callvault readiness probe", content_type="text/plain", metadata={}
        )
        await store.delete(PROBE_KEY)
    except StorageError as exc:
        log.warning("not ready", check="default_store", reason=exc.reason)
        if exc.kind is StorageErrorKind.PERMANENT_NOT_FOUND:
            return "bucket missing"
        if exc.kind is StorageErrorKind.PERMANENT_AUTH:
            return "access denied"
        return "unavailable"
    return None


async def _run(name: str, check: Check, runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECS):
            verdict = await check(runtime)
    except Exception as exc:
        log.warning("not ready", check=name, error_type=type(exc).__name__)
        return "unavailable"
    if verdict is not None:
        log.warning("not ready", check=name, verdict=verdict)
    return verdict or "ok"


async def _cached(
    readiness: Readiness, name: str, check: Check, secs: float, runtime: Runtime
) -> tuple[str, str]:
    now = time.monotonic()
    hit = readiness.cached.get(name)
    if hit is not None and hit[0] > now:
        return name, hit[1]
    verdict = await _run(name, check, runtime)
    if verdict == "ok":
        # only a pass is cached: a failing check is asked again at the next probe, so /ready
        # turns 200 as soon as the cause is gone (a database back after an outage)
        readiness.cached[name] = (now + secs, verdict)
    else:
        readiness.cached.pop(name, None)
    return name, verdict


async def _uncached(name: str, check: Check, runtime: Runtime) -> tuple[str, str]:
    return name, await _run(name, check, runtime)


@router.get(
    "/ready",
    tags=["health"],
    summary="Readiness: the database at head, the default store writable, the keys open the data",
    responses={503: {"description": "A check failed (named in `checks`)."}},
)
async def ready(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    readiness: Readiness = getattr(request.app.state, "readiness", None) or Readiness()
    checks = dict(
        await asyncio.gather(
            _uncached("database", _database, runtime),
            _cached(readiness, "default_store", _default_store, STORE_CHECK_SECS, runtime),
            *(
                _cached(readiness, name, check, secs, runtime)
                for name, (check, secs) in readiness.extra.items()
            ),
        )
    )
    if all(state == "ok" for state in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"status": "unavailable", "checks": checks},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECS)},
    )
