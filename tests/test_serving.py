"""`callvault serve`'s uvicorn (serving.py `server_options`) against slow clients, and a database
outage answered with one log line per 503 (issue 21 item 9). A real uvicorn in a thread of
this process, on a free port, raw sockets for the slow clients; its database is a PostgreSQL
address nothing listens on (an outage from the first request)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import http.client
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn

from callvault.app import create_app
from callvault.runtime import Runtime
from callvault.serving import server_options
from tests.conftest import make_settings
from tests.servers import closed_port, free_port

DEADLINE_SECS = 1.0
# the slow client keeps sending for this long; cut off at about DEADLINE_SECS
TRICKLE_SECS = 8.0


@dataclasses.dataclass
class Served:
    url: str
    port: int
    server_errors: list[logging.LogRecord]
    # what the server wrote on each connection, one entry per send, by the client's port
    sends: dict[int, list[bytes]]


class _CountingTransport:
    """The connection's transport, each write recorded."""

    def __init__(self, transport: asyncio.Transport, sends: list[bytes]) -> None:
        self._transport = transport
        self.sends = sends

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def counting_sends(protocol: type[Any], sends: dict[int, list[bytes]]) -> type[Any]:
    """`protocol` (serve's) with the writes of each connection recorded in `sends`."""

    class Counting(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            client_port = transport.get_extra_info("peername")[1]
            written = sends.setdefault(client_port, [])
            super().connection_made(_CountingTransport(transport, written))

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            CYCLES.append(weakref.ref(self.cycle))

    return Counting


# every request's cycle (uvicorn's RequestResponseCycle), weakly
CYCLES: list[weakref.ref[Any]] = []


class _Records(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    dead_database = f"postgresql://postgres@127.0.0.1:{closed_port()}/callvault"
    settings = make_settings(tmp_path_factory.mktemp("serving"), dead_database)
    environ = {
        **settings.environ,
        "CALLVAULT_HEADER_TIMEOUT_SECS": str(DEADLINE_SECS),
        "CALLVAULT_BODY_TIMEOUT_SECS": str(DEADLINE_SECS),
    }
    settings = dataclasses.replace(settings, environ=environ)
    options = server_options(environ)
    options["loop"] = "asyncio"  # uvloop would set this test process's event loop policy
    sends: dict[int, list[bytes]] = {}
    options["http"] = counting_sends(options["http"], sends)
    port = free_port()
    config = uvicorn.Config(
        create_app(Runtime.build(settings)), host="127.0.0.1", port=port, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    errors: list[logging.LogRecord] = []
    handler = _Records(errors)
    # uvicorn logs "Exception in ASGI application" (with the traceback) here
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, errors, sends)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        server.should_exit = True
        thread.join(timeout=30)


def trickle(port: int, first: bytes, then: bytes) -> tuple[float, bytes]:
    """Send `first`, then `then` a byte every 0.2 s; (seconds until the server closed the
    connection, what it answered). Fails if the server still listens after TRICKLE_SECS."""
    with socket.create_connection(("127.0.0.1", port), timeout=TRICKLE_SECS + 5) as sock:
        started = time.monotonic()
        sock.sendall(first)
        sock.settimeout(0.2)
        answer = b""
        for byte in then:
            try:
                data = sock.recv(65536)
                if not data:
                    return time.monotonic() - started, answer
                answer += data
            except TimeoutError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - started, answer
            if time.monotonic() - started > TRICKLE_SECS:
                break
            try:
                sock.sendall(bytes([byte]))
            except (ConnectionResetError, BrokenPipeError):
                return time.monotonic() - started, answer
    pytest.fail(f"still connected after {TRICKLE_SECS} s of trickling (answered {answer!r})")


def test_headers_trickled_are_cut_off_at_the_deadline(served: Served) -> None:
    slow_header = b"X-Slow: " + b"a" * 200
    elapsed, answer = trickle(served.port, b"GET /health HTTP/1.1\r\nHost: x\r\n", slow_header)
    assert DEADLINE_SECS * 0.9 <= elapsed < DEADLINE_SECS + 2, elapsed
    assert answer == b""  # closed, nothing answered
    # a connection that sends nothing at all is closed too
    with socket.create_connection(("127.0.0.1", served.port), timeout=TRICKLE_SECS) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < DEADLINE_SECS + 2


def test_oversized_headers_are_cut_off(served: Served) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):  # 100 x 1 KiB > 64 KiB
                sock.sendall(b"a" * 1024)
                time.sleep(0.001)
            assert sock.recv(1024) == b""
            raise ConnectionResetError  # closed cleanly: counts as cut off


def test_a_large_body_read_with_its_headers_is_not_counted_as_headers(served: Served) -> None:
    # one send: the server's first read holds the headers and ~200 KiB of body (an ingest of
    # a 30 s WAV under load); only header bytes count against the 64 KiB limit
    body = b"a" * 200_000
    head = (
        b"POST /v2/call_control_applications HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 "), answer


def test_ordinary_and_kept_alive_requests_are_untouched(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/health").status_code == 200
        # idle between requests longer than the header deadline: the keep-alive's business
        time.sleep(DEADLINE_SECS * 1.5)
        assert client.get("/health").status_code == 200


def test_a_body_trickled_is_answered_408(served: Served) -> None:
    head = (
        b"POST /v2/call_control_applications HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answer = sock.recv(65536)  # nothing more is sent: the body stalls
        elapsed = time.monotonic() - started
        while b"}" not in answer and (more := sock.recv(65536)):
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"code":"10008"' in answer
    assert DEADLINE_SECS * 0.9 <= elapsed < DEADLINE_SECS + 3, elapsed


def test_a_database_outage_503_logs_one_line_and_no_traceback(served: Served) -> None:
    served.server_errors.clear()
    with structlog.testing.capture_logs() as logs, httpx.Client(base_url=served.url) as client:
        answers = [
            client.get("/v2/call_control_applications", headers={"Authorization": "Bearer k"})
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [503] * 3
    assert all(a.headers.get("retry-after") for a in answers)
    assert all(a.json()["errors"][0]["code"] == "190003" for a in answers)
    outage = [line for line in logs if line["event"] == "database unavailable"]
    assert len(outage) == 3, logs  # one line per 503
    assert all(line["log_level"] == "warning" for line in outage)
    assert [r.getMessage() for r in served.server_errors] == []  # no traceback from uvicorn


def test_an_answer_is_one_send_head_and_body_together(served: Served) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        answers = []
        for method, path in [("GET", "/health"), ("GET", "/no-such-page"), ("GET", "/health")]:
            connection.request(method, path)
            answer = connection.getresponse()
            answers.append((answer.status, answer.read()))
        client_port = connection.sock.getsockname()[1]
    finally:
        connection.close()
    assert [status for status, _ in answers] == [200, 404, 200]
    sends = served.sends[client_port]
    # one send per answer (one connection, kept alive), each the whole of it
    assert len(sends) == 3, sends
    for send, (status, body) in zip(sends, answers, strict=True):
        assert send.startswith(b"HTTP/1.1 %d " % status), send
        assert send.endswith(b"\r\n\r\n" + body), send


def test_an_answered_request_is_freed_without_the_garbage_collector(served: Served) -> None:
    # the held head's transport must not keep a reference cycle with its request's cycle:
    # each request would then wait for a collection to be freed, with its scope and body
    gc.disable()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        try:
            for _ in range(3):
                connection.request("GET", "/health")
                connection.getresponse().read()
        finally:
            connection.close()
        first = CYCLES[-3]
        deadline = time.monotonic() + 10
        while first() is not None and time.monotonic() < deadline:
            time.sleep(0.01)  # the server's thread lets go of it once the next request runs
        assert first() is None
    finally:
        gc.enable()


def test_a_head_answer_and_a_100_continue_are_not_held(served: Served) -> None:
    # a HEAD's head is all there is: written at once (held, the client would wait for ever)
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request("HEAD", "/health")
        answer = connection.getresponse()
        answer.read()
        client_port = connection.sock.getsockname()[1]
    finally:
        connection.close()
    assert answer.status in (200, 405)
    assert len(served.sends[client_port]) == 1
    # a 100 Continue goes before the answer, alone; the answer is then one send
    body = b'{"application_name": "x"}'
    head = (
        b"POST /v2/call_control_applications HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer k\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reply = sock.recv(65536)
        while not reply.endswith(b"}") and (more := sock.recv(65536)):
            reply += more
    assert reply.startswith(b"HTTP/1.1 503 "), reply
    assert served.sends[client_port] == [b"HTTP/1.1 100 Continue\r\n\r\n", reply]
