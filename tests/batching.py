"""A group-commit unit that holds its batch open, for tests that need a batch to form."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

HOLD_SECS = 30.0


class HeldUnit:
    """Runs inside the writer's transaction and waits there until `release()`. On SQLite the
    transaction runs on the writes' own thread (db.ThreadWrites), where the unit simply
    blocks; elsewhere it runs in an async session's greenlet on the event loop, where it
    waits without blocking the loop."""

    def __init__(self, result: str = "held") -> None:
        self.result = result
        self._running = threading.Event()
        self._gate = threading.Event()

    def __call__(self, session: Session) -> str:
        self._running.set()
        if _on_event_loop():
            await_only(asyncio.to_thread(self._gate.wait, HOLD_SECS))
        else:
            self._gate.wait(HOLD_SECS)
        return self.result

    async def running(self) -> None:
        """Until the unit runs inside its batch's transaction."""
        if not await asyncio.to_thread(self._running.wait, HOLD_SECS):
            raise AssertionError(f"the held unit did not run within {HOLD_SECS} s")

    def release(self) -> None:
        self._gate.set()

    @property
    def released(self) -> bool:
        return self._gate.is_set()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
