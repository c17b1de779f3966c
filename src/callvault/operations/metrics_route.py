"""The `/metrics` route: the process's counters (metrics.py) and, read at scrape time, /ready's
checks, the data dir's disk and the backlog (operations/backlog.py).

The backlog gauges come from the database, so any one process shows the whole deployment's
backlog.

`CALLVAULT_METRICS_TOKEN` set: a scrape must send `Authorization: Bearer <token>` (compared in
constant time), else 401. The backlog's queries run at most once per
`CALLVAULT_METRICS_CACHE_SECS` (default 5) per process, however many scrapers ask: a burst of
scrapes cannot become a burst of aggregate queries on the database.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from callvault.db import utcnow
from callvault.errors import unauthorized
from callvault.health import ready
from callvault.metrics import DATA_DIR_FREE, DATA_DIR_SIZE, READY, READY_CHECK
from callvault.operations.backlog import Backlog, read_backlog

log = structlog.get_logger("callvault.metrics")

RECORDINGS_BY_STATE = Gauge("callvault_recordings", "Recordings per state", ["state"])
EVENTS_PENDING = Gauge("callvault_webhook_events_pending", "Webhook events waiting for delivery")
EVENTS_FAILED = Gauge("callvault_webhook_events_failed", "Webhook events whose delivery gave up")
OLDEST_PENDING_AGE = Gauge(
    "callvault_oldest_pending_age_seconds", "Age of the oldest recording or event still waiting"
)
TOKEN_ENV = "CALLVAULT_METRICS_TOKEN"
CACHE_ENV = "CALLVAULT_METRICS_CACHE_SECS"
DEFAULT_CACHE_SECS = 5.0

router = APIRouter()


def token_refused(environ: Mapping[str, str], authorization: str | None) -> bool:
    """Whether a scrape with this Authorization header is refused (pure)."""
    expected = environ.get(TOKEN_ENV, "")
    if not expected:
        return False  # unset: open, as before (a scraper inside the private network)
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return True
    return not hmac.compare_digest(given.strip().encode(), expected.encode())


def cache_seconds(environ: Mapping[str, str]) -> float:
    value = float(environ.get(CACHE_ENV) or DEFAULT_CACHE_SECS)
    if not value >= 0:
        raise ValueError(f"{CACHE_ENV} must be a number of seconds, 0 or more")
    return value


@dataclass(frozen=True)
class Scrape:
    """What a scrape reads from the database and the stores: /ready's checks and the backlog
    (None when not read: not ready, or the read failed)."""

    ready: bool
    checks: dict[str, str]
    backlog: Backlog | None


async def read_scrape(request: Request) -> Scrape:
    readiness = await ready(request)
    checks = json.loads(bytes(readiness.body)).get("checks", {})
    backlog = None
    if readiness.status_code == 200:
        try:
            async with request.app.state.runtime.sessions() as session:
                backlog = await read_backlog(session)
        except Exception as exc:
            log.warning("metrics: backlog not read", error_type=type(exc).__name__)
    return Scrape(readiness.status_code == 200, checks, backlog)


@dataclass
class ScrapeCache:
    """The last scrape's reads and when (monotonic); one reader at a time, the others wait for
    its answer instead of querying too."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    read_at: float = -math.inf
    scrape: Scrape | None = None

    async def get(self, request: Request, max_age: float) -> Scrape:
        async with self.lock:
            if self.scrape is None or time.monotonic() - self.read_at >= max_age:
                self.scrape = await read_scrape(request)
                self.read_at = time.monotonic()
            return self.scrape


def _cache_of(request: Request) -> ScrapeCache:
    cache = getattr(request.app.state, "metrics_scrape", None)
    if cache is None:
        cache = request.app.state.metrics_scrape = ScrapeCache()
    return cache


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    runtime = request.app.state.runtime
    environ = runtime.settings.environ
    if token_refused(environ, request.headers.get("authorization")):
        raise unauthorized(f"/metrics needs Authorization: Bearer <{TOKEN_ENV}>.")
    scrape = await _cache_of(request).get(request, cache_seconds(environ))
    READY.set(1 if scrape.ready else 0)
    for check, state in scrape.checks.items():
        READY_CHECK.labels(check=check).set(1 if state == "ok" else 0)
    try:
        disk = os.statvfs(runtime.settings.data_dir)
    except OSError:
        pass
    else:
        DATA_DIR_FREE.set(disk.f_bavail * disk.f_frsize)
        DATA_DIR_SIZE.set(disk.f_blocks * disk.f_frsize)
    # with the database away the backlog keeps its last values; callvault_ready says why
    if scrape.backlog is not None:
        for state, count in scrape.backlog.recordings_by_state.items():
            RECORDINGS_BY_STATE.labels(state=state).set(count)
        EVENTS_PENDING.set(scrape.backlog.events_pending)
        EVENTS_FAILED.set(scrape.backlog.events_failed)
        OLDEST_PENDING_AGE.set(scrape.backlog.oldest_pending_age_seconds(utcnow()))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
