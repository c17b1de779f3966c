"""How `callvault serve` runs uvicorn: its options, and the header read deadline uvicorn lacks.

uvicorn bounds a connection that is idle between requests (`timeout_keep_alive`) but nothing
else about reading a request: a new connection, or a kept-alive one whose timer a single byte
cancelled, may trickle its request line and headers for ever (slowloris), each such connection
held open. `HeaderDeadline` closes a connection whose request headers are not complete
`CALLVAULT_HEADER_TIMEOUT_SECS` (default 20) after its first byte (after the connection opened,
for its first request), or that sends more than 64 KiB of them (httptools sets no limit).

A response's head is written together with its first body bytes (`HeadWithBody`): uvicorn
writes them apart, a send (a syscall) each.

Bodies have their own deadlines: ingest's pace (recordings/upload.py `BodyPace`), every other
body `CALLVAULT_BODY_TIMEOUT_SECS` (limits.py). No `limit_concurrency`: it answers 503 to
everyone once slow clients fill it, which is the attacker's goal; the deadlines bound how long
each slow connection lives instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

HEADER_TIMEOUT_ENV = "CALLVAULT_HEADER_TIMEOUT_SECS"
DEFAULT_HEADER_TIMEOUT_SECS = 20.0
MAX_HEADER_BYTES = 64 * 1024


def header_timeout_secs(environ: Mapping[str, str]) -> float:
    value = float(environ.get(HEADER_TIMEOUT_ENV) or DEFAULT_HEADER_TIMEOUT_SECS)
    if not value > 0:
        raise ValueError(f"{HEADER_TIMEOUT_ENV} must be a positive number of seconds")
    return value


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on request headers."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._completed_headers = False  # during one data_received
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_headers()

    def data_received(self, data: bytes) -> None:
        # counted after parsing: a read holds the headers and often the start of the body (up
        # to 256 KiB), and only a read that leaves the headers incomplete was all headers
        counting = self._in_headers
        self._completed_headers = False
        super().data_received(data)
        if counting and self._in_headers and not self._completed_headers:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._cut_off()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # a kept-alive connection's next request
            self._start_headers()

    def on_headers_complete(self) -> None:
        self._completed_headers = True
        self._stop_headers()
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a request to answer (not an upgrade)
            self.cycle.transport = HeadWithBody(self.cycle, self.transport)  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_headers()
        super().connection_lost(exc)

    def _start_headers(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._cut_off)

    def _stop_headers(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cut_off(self) -> None:
        # no answer: the request is not known yet, and a pipelined answer may be on its way
        self._stop_headers()
        if not self.transport.is_closing():
            self.transport.close()


class HeadWithBody:
    """A response's transport that holds the head (status line and headers) until the first
    body message and writes both in one send. What is not the head passes through: a
    `100 Continue` (written before the response starts), the body, a HEAD's head (no body
    follows). Closing writes a head still held first, as uvicorn had written it already."""

    __slots__ = ("_cycle", "_head", "_transport")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport) -> None:
        # the cycle until its head is written (then let go: the cycle holds this transport,
        # and a reference back would leave every request to the garbage collector)
        self._cycle: RequestResponseCycle | None = cycle
        self._transport = transport
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head + data)
        elif self._cycle is not None and self._cycle.response_started:
            # uvicorn writes the head right after it marks the response started
            method, self._cycle = self._cycle.scope["method"], None
            if method == "HEAD":
                self._transport.write(data)
            else:
                self._head = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        self._cycle = None
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def server_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """uvicorn's options for `callvault serve` (besides the app, host and port)."""
    protocol = type(
        "HeaderDeadline", (HeaderDeadline,), {"header_timeout": header_timeout_secs(environ)}
    )
    return {
        # explicit: "auto" would fall back silently to the slower pure-Python loop and parser
        "loop": "uvloop",
        "http": protocol,
        "log_level": "warning",
        "access_log": False,
        # longer than load balancers' idle timeouts (60 s) and clients' pools (httpx: 5 s), so
        # a client never reuses a connection the server is closing at that very moment
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": 30,
    }
