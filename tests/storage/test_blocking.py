"""Blocking storage clients run in their own bounded pool, not asyncio's default executor."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from callvault.storage import blocking
from callvault.storage import settings as storage_settings
from callvault.storage.settings import StorageSettings


async def test_calls_run_in_the_storage_pool_and_are_bounded() -> None:
    names = await asyncio.gather(
        *(blocking.run_blocking(lambda: threading.current_thread().name) for _ in range(4))
    )
    assert all(name.startswith("callvault-storage") for name in names)
    pool = blocking.executor()
    threads = storage_settings.current().threads
    assert pool._max_workers == threads  # bounded

    # a hung bucket filling the storage pool leaves the default executor free
    release = threading.Event()
    hung = [blocking.run_blocking(lambda: release.wait(10)) for _ in range(threads)]
    tasks = [asyncio.ensure_future(h) for h in hung]
    try:
        started = time.monotonic()
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), timeout=5) == 42
        assert time.monotonic() - started < 5
    finally:
        release.set()
        await asyncio.gather(*tasks)


def test_thread_count_setting() -> None:
    assert StorageSettings.from_environ({}).threads == 16
    assert StorageSettings.from_environ({"CALLVAULT_STORAGE_THREADS": "4"}).threads == 4
    with pytest.raises(ValueError):
        StorageSettings.from_environ({"CALLVAULT_STORAGE_THREADS": "0"})
