"""A real webhook receiver for tests: an HTTP server on a free loopback port, in a thread.

It records every request (raw body, headers, path, when) and answers 200 unless told otherwise:

    receiver.answer(500, times=2)                 # the next two requests get 500
    receiver.answer(503, seconds=1.5, path="/primary")   # 503 on /primary for 1.5 s
    receiver.stall(3.0, times=1)                  # the next request waits 3 s (client timeouts)

Signatures are checked with the official Telnyx SDK (`client.webhooks.unwrap`), the same call a
customer makes. Registered as a pytest plugin (tests/conftest.py): fixture `webhook_receiver`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import telnyx


@dataclass(frozen=True)
class Delivery:
    path: str
    body: str
    headers: dict[str, str]  # names lowercased
    received_at: float  # time.monotonic()
    answered: int

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_id(self) -> str:
        body = self.json()
        return str(body["data"]["id"] if "data" in body else body["webhook_id"])

    @property
    def event_type(self) -> str:
        body = self.json()
        return str(body["data"]["event_type"] if "data" in body else body["event_type"])

    @property
    def payload(self) -> dict[str, Any]:
        body = self.json()
        payload: dict[str, Any] = body["data"]["payload"] if "data" in body else body["payload"]
        return payload


@dataclass
class _Rule:
    status: int
    path: str | None
    remaining: int | None  # requests left, or None for a time window
    until: float | None  # time.monotonic() deadline
    stall_seconds: float = 0.0

    def matches(self, path: str, now: float) -> bool:
        if self.path is not None and self.path != path:
            return False
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    deliveries: list[Delivery] = field(default_factory=list)
    # extra headers of every answer (what a delivery record may or may not keep of them)
    answer_headers: list[tuple[str, str]] = field(default_factory=list)
    # 0: a free port; a fixed one when stored URLs name it (tests/operations/fixtures/v1)
    bind_port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        # requests being answered now, and the most at once (what the sender's slots allow)
        self._in_flight = 0
        self.max_in_flight = 0
        self._sdk = telnyx.Telnyx(api_key="KEY-not-used-for-verification")
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                status, stall = receiver._decide(self.path)
                receiver._arrived()
                # recorded on arrival, so a stalled request is visible while it is held
                receiver._record(
                    Delivery(
                        path=self.path,
                        body=body,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        received_at=time.monotonic(),
                        answered=status,
                    )
                )
                if stall:
                    time.sleep(stall)
                answer = b'{"ok":true}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    for name, value in receiver.answer_headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:  # the client gave up (timeout tests)
                    pass
                finally:
                    receiver._answered()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.bind_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # lifecycle
    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/webhooks") -> str:
        return f"http://{self.host}:{self.port}{path}"

    # behaviour
    def answer(
        self,
        status: int,
        *,
        times: int | None = None,
        seconds: float | None = None,
        path: str | None = None,
    ) -> None:
        """Answer `status` for the next `times` requests, or for the next `seconds`."""
        if (times is None) == (seconds is None):
            raise ValueError("give times or seconds")
        until = time.monotonic() + seconds if seconds is not None else None
        with self._lock:
            self._rules.append(_Rule(status, path, times, until))

    def recover(self) -> None:
        """Forget every rule given so far: 200 for every request from now on."""
        with self._lock:
            self._rules.clear()

    def stall(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Hold the next `times` requests for `seconds` before answering 200."""
        with self._lock:
            self._rules.append(_Rule(200, path, times, None, stall_seconds=seconds))

    def _decide(self, path: str) -> tuple[int, float]:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.matches(path, now):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.status, rule.stall_seconds
        return 200, 0.0

    def _arrived(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _answered(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)

    # reading what arrived
    def received(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    async def wait_for(
        self,
        count: int = 1,
        *,
        within: float = 10.0,
        path: str | None = None,
        where: Callable[[Delivery], bool] | None = None,
    ) -> list[Delivery]:
        """Wait until `count` matching deliveries arrived; return them (fails on timeout)."""
        deadline = time.monotonic() + within
        while True:
            found = [d for d in self.received(path) if where is None or where(d)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} webhook(s) within {within} s, got {len(found)}: "
                    f"{[d.body[:200] for d in self.received()]}"
                )
            await asyncio.sleep(0.005)

    def wait_for_sync(self, count: int = 1, *, within: float = 10.0) -> list[Delivery]:
        deadline = time.monotonic() + within
        while len(found := self.received()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhook(s) within {within} s")
            time.sleep(0.005)
        return found

    def verify(self, delivery: Delivery, public_key: str) -> Any:
        """The SDK's unwrap: raises ValueError unless signed by `public_key` within 300 s."""
        return self._sdk.webhooks.unwrap(delivery.body, headers=delivery.headers, key=public_key)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver
