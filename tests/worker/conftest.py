"""A worker in the test's own event loop, on the session's runtime (both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from callvault.jobs import make_worker
from callvault.runtime import Runtime
from callvault.worker.runner import Worker

FAST_SCHEDULE = (0.2, 0.4, 0.6)


@pytest.fixture
async def start_worker(runtime: Runtime) -> AsyncIterator[Callable[..., Worker]]:
    """`await start_worker(**kwargs)`: a started Worker, stopped after the test."""
    started: list[Worker] = []

    async def start(**kwargs: object) -> Worker:
        kwargs.setdefault("poll_seconds", 0.1)
        kwargs.setdefault("webhook_schedule", FAST_SCHEDULE)
        worker = make_worker(runtime, **kwargs)  # type: ignore[arg-type]
        await worker.start()
        started.append(worker)
        return worker

    yield start  # type: ignore[misc]
    for worker in started:
        await worker.stop()
