"""`GET /health`: liveness (the process answers). `GET /ready`: readiness — the database and the
default store answer — for load balancers and orchestrators; no auth, no details beyond
which dependency is away (no error text: it could name hosts)."""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from callvault.errors import DATABASE_RETRY_AFTER_SECS
from callvault.runtime import Runtime

router = APIRouter()
log = structlog.get_logger("callvault.health")

CHECK_TIMEOUT_SECS = 3.0
# a key no recording ever has (keys start with an account id): a HEAD that answers "absent"
PROBE_KEY = "callvault-readiness-probe"


@router.get("/health", tags=["health"], summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _database(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        await session.execute(text("SELECT 1"))


async def _default_store(runtime: Runtime) -> None:
    await runtime.default_store.head(PROBE_KEY)


async def _check(name: str, probe: object) -> tuple[str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECS):
            await probe  # type: ignore[misc]
    except Exception as exc:
        log.warning("not ready", dependency=name, error_type=type(exc).__name__)
        return name, "unavailable"
    return name, "ok"


@router.get(
    "/ready",
    tags=["health"],
    summary="Readiness: the database and the default store answer",
    responses={503: {"description": "A dependency is unavailable (see `checks`)."}},
)
async def ready(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    checks = dict(
        await asyncio.gather(
            _check("database", _database(runtime)),
            _check("default_store", _default_store(runtime)),
        )
    )
    if all(state == "ok" for state in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"status": "unavailable", "checks": checks},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECS)},
    )
