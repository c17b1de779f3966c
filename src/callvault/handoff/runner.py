"""The loop both spools share: find ready items in order, hand each off with bounded
concurrency, honour the server's Retry-After, park unusable items in failed/.

An item (`SpoolItem`) knows how to become an audio file + ingest metadata (`prepare`), how to
leave the spool once callvault has it (`remove`) and how to move to failed/ (`park`). Its
files stay where they are until ingest answered 200/202, so a hand-off killed at any moment
loses nothing; the next run posts the item again and ingest's idempotency answers 200 with the
same recording (nothing stored twice).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from callvault.handoff.client import TIMEOUT, Answer, post_recording
from callvault.handoff.spoolmeta import UnusableCall

log = structlog.get_logger("callvault.handoff")
FAILED = "failed"


class SpoolItem(Protocol):
    @property
    def name(self) -> str: ...

    def prepare(self, work_dir: Path) -> tuple[Path, dict[str, Any]]:
        """The audio file and the ingest metadata; raises UnusableCall."""
        ...

    def remove(self) -> None: ...

    def files(self) -> list[Path]: ...


def park(item: SpoolItem, failed_dir: Path, reason: str) -> None:
    """Move the item's files to failed/ with `<name>.reason` beside them."""
    failed_dir.mkdir(parents=True, exist_ok=True)
    for path in item.files():
        if path.exists():
            shutil.move(str(path), failed_dir / path.name)
    (failed_dir / f"{item.name}.reason").write_text(reason.rstrip() + "\n")
    log.error("hand-off failed: moved to failed/", item=item.name, reason=reason)


@dataclass
class RunStats:
    stored: int = 0
    repeats: int = 0
    failed: int = 0
    waiting: int = 0  # items left for a later run (the server did not take them)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Runner:
    server: str
    token: str
    failed_dir: Path
    scan: Callable[[], Iterable[SpoolItem]]
    concurrency: int = 2
    poll_seconds: float = 1.0
    once_attempts: int = 2  # --once: tries while the server says "later", then the run stops
    transport: httpx.BaseTransport | None = None  # tests: the HTTP answers, scripted
    stats: RunStats = field(default_factory=RunStats)
    _pause_until: float = 0.0
    _gave_up: bool = False  # --once: the server said "later" too often, leave the rest
    _pause_lock: threading.Lock = field(default_factory=threading.Lock)

    def _pause(self, seconds: float) -> None:
        with self._pause_lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def _wait_for_server(self, stop: threading.Event | None = None) -> None:
        while (delay := self._pause_until - time.monotonic()) > 0:
            if stop is None:
                time.sleep(min(delay, 1.0))
            elif stop.wait(min(delay, 1.0)):
                return

    def handle(
        self,
        client: httpx.Client,
        item: SpoolItem,
        attempts: int | None,
        stop: threading.Event | None = None,
    ) -> str:
        """One item, start to end: "stored", "repeat", "failed", "waiting" or "gone"."""
        if self._gave_up:
            return "waiting"
        with tempfile.TemporaryDirectory(prefix="callvault-handoff-") as work:
            try:
                audio, metadata = item.prepare(Path(work))
            except FileNotFoundError:
                return "gone"  # another hand-off took it
            except UnusableCall as exc:
                park(item, self.failed_dir, str(exc))
                return "failed"
            except Exception as exc:  # a bug or a file nobody expected: never block the rest
                park(item, self.failed_dir, f"cannot convert: {type(exc).__name__}: {exc}")
                return "failed"
            tries = 0
            while stop is None or not stop.is_set():
                self._wait_for_server(stop)
                answer: Answer = post_recording(client, self.server, self.token, audio, metadata)
                tries += 1
                if answer.outcome == "stored":
                    item.remove()
                    log.info(
                        "handed off",
                        item=item.name,
                        recording_id=answer.recording_id,
                        repeat=not answer.created,
                    )
                    return "stored" if answer.created else "repeat"
                if answer.outcome == "refused":
                    park(item, self.failed_dir, f"ingest refused it: {answer.detail}")
                    return "failed"
                log.warning(
                    "ingest not available, will retry",
                    item=item.name,
                    detail=answer.detail,
                    retry_after=answer.retry_after,
                )
                self._pause(answer.retry_after)
                if attempts is not None and tries >= attempts:
                    self._gave_up = True
                    return "waiting"
            return "waiting"

    def _safe(
        self,
        client: httpx.Client,
        item: SpoolItem,
        attempts: int | None,
        stop: threading.Event | None = None,
    ) -> str:
        """`handle`, but a surprise (a file that cannot be removed, a disk error) is one log
        line and the item stays for the next look, never the end of the hand-off."""
        try:
            return self.handle(client, item, attempts, stop)
        except Exception as exc:
            log.error("hand-off error", item=item.name, error=f"{type(exc).__name__}: {exc}")
            return "waiting"

    def _count(self, result: str) -> None:
        with self.stats.lock:
            if result == "stored":
                self.stats.stored += 1
            elif result == "repeat":
                self.stats.repeats += 1
            elif result == "failed":
                self.stats.failed += 1
            elif result == "waiting":
                self.stats.waiting += 1

    def run_once(self) -> RunStats:
        """Everything ready now, in order, then return."""
        items = list(self.scan())
        with (
            httpx.Client(timeout=TIMEOUT, transport=self.transport) as client,
            ThreadPoolExecutor(max_workers=self.concurrency) as pool,
        ):
            for result in pool.map(lambda i: self._safe(client, i, self.once_attempts), items):
                self._count(result)
        return self.stats

    def run_forever(self, stop: threading.Event) -> None:
        """Until `stop`: new items as they become ready, `concurrency` at a time."""
        busy: dict[str, Future[str]] = {}
        with (
            httpx.Client(timeout=TIMEOUT, transport=self.transport) as client,
            ThreadPoolExecutor(max_workers=self.concurrency) as pool,
        ):
            while not stop.is_set():
                for name, future in list(busy.items()):
                    if future.done():
                        del busy[name]
                        self._count(future.result())
                self._wait_for_server(stop)
                for item in self.scan():
                    if len(busy) >= self.concurrency:
                        break
                    if item.name not in busy:
                        busy[item.name] = pool.submit(self._safe, client, item, None, stop)
                stop.wait(self.poll_seconds)
            for future in busy.values():
                future.cancel()
