"""The FastAPI application: routers of every domain, error handlers, the in-process worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI

from callvault import __version__
from callvault.credentials.cached_get import CachedCredentialsGet
from callvault.credentials.keycheck import KeysDoNotOpenData, check_keys
from callvault.errors import DatabaseOutageAnswer, install_error_handlers
from callvault.health import KEYS_CHECK_SECS, Readiness
from callvault.jobs import wire_domains
from callvault.limits import InputLimits, body_timeout_secs
from callvault.query import document_unknown_parameters, reject_unknown_query
from callvault.routes import include_routers
from callvault.runtime import Runtime


def create_app(runtime: Runtime, *, run_worker: bool = False) -> FastAPI:
    wire_domains()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = None
        if run_worker:
            from callvault.jobs import make_worker

            worker = make_worker(runtime)
            await worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await runtime.close()

    app = FastAPI(
        title="callvault",
        version=__version__,
        description="Call recordings stored where their owner chooses (Telnyx-compatible API).",
        openapi_url="/v2/openapi.json",
        # /v2/docs is ours, self-hosted and off unless CALLVAULT_API_DOCS (console/api_docs.py)
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # every /v2 operation refuses query parameters it does not declare (query.py)
        dependencies=[Depends(reject_unknown_query)],
    )
    app.state.runtime = runtime
    app.state.readiness = Readiness()
    app.state.readiness.add("keys", _keys_open_the_data, KEYS_CHECK_SECS)
    install_error_handlers(app)
    # the hot credentials GET from its cache, inside the input limits (credentials/cached_get.py)
    app.add_middleware(CachedCredentialsGet, runtime=runtime)
    app.add_middleware(
        InputLimits,
        max_bytes=runtime.settings.max_json_bytes,
        body_timeout_secs=body_timeout_secs(runtime.settings.environ),
    )
    # outermost: a database outage is a 503 and one log line, wherever it surfaces (errors.py)
    app.add_middleware(DatabaseOutageAnswer)
    include_routers(app)
    document_unknown_parameters(app)
    return app


async def _keys_open_the_data(runtime: Runtime) -> str | None:
    """/ready's `keys` check: another process may have written with other keys since start."""
    async with runtime.sessions() as session:
        try:
            await check_keys(session, runtime.settings.keyring)
        except KeysDoNotOpenData as exc:
            structlog.get_logger("callvault.app").error("keys check failed", reason=str(exc))
            return "do not open the stored data"
    return None
