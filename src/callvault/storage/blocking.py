"""A dedicated, bounded thread pool for blocking storage clients (google-cloud-storage, and
azure-storage-blob for Azure uploads).

asyncio's default executor also runs ingest's file I/O and the local store; a customer's slow
or hung bucket filling it would stall every other tenant's ingest. Blocking storage calls run
here instead: CALLVAULT_STORAGE_THREADS (default 16; storage/settings.py) threads at most, each
call bounded by its client's own timeouts; beyond that, calls queue here, not in the default
pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from callvault.storage import settings as storage_settings

T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=storage_settings.current().threads,
                thread_name_prefix="callvault-storage",
            )
        return _executor


async def run_blocking(fn: Callable[[], T]) -> T:
    """`fn()` in the storage pool (context variables, e.g. log fields, go with it)."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(), functools.partial(context.run, fn))
