"""outbound/post_client.py's framing on one connection: a request leaves in one write, every
wait for the answer asks for an immediate ACK, and a connection is kept only after a clean
exchange. A recording transport stands in for the socket; tests/security and tests/webhooks
run the client against real receivers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import pytest

from callvault.outbound.post_client import QUICKACK, PostClient, UnsupportedURL, _Wire, target_of
from tests.outbound.posting import post

ANSWER_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"


class RecordingSocket:
    """Records options; its descriptor is a real socket nothing is ever written to (the pool
    polls an idle connection's socket before reusing it)."""

    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []
        self.silent, self._other_end = socket.socketpair()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))

    def fileno(self) -> int:
        return self.silent.fileno()

    def close(self) -> None:
        self.silent.close()
        self._other_end.close()


class RecordingTransport(asyncio.Transport):
    """Records writes; `answer` is called with each one (to script the receiver)."""

    def __init__(self, answer: Callable[[bytes], None]) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.socket = RecordingSocket()
        self.answer = answer
        self.ended: str | None = None  # "close" (FIN) or "abort" (RST)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.answer(bytes(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.socket if name == "socket" else default

    def is_closing(self) -> bool:
        return self.ended is not None

    def close(self) -> None:
        self.ended = "close"
        self.socket.close()

    def abort(self) -> None:
        self.ended = "abort"
        self.socket.close()


def connected(client: PostClient, url: str, *pieces: bytes) -> tuple[_Wire, RecordingTransport]:
    """A pooled connection to `url` whose receiver answers each request with `pieces`, one
    loop turn apart."""
    wire = _Wire()
    loop = asyncio.get_running_loop()

    def answer(_: bytes) -> None:
        for n, piece in enumerate(pieces):
            loop.call_later(0.001 * (n + 1), wire.data_received, piece)

    transport = RecordingTransport(answer)
    wire.connection_made(transport)
    wire.idle_since = time.monotonic()
    client._idle.setdefault(target_of(url).key, []).append(wire)  # the pool's own: no connect
    return wire, transport


async def test_a_request_leaves_in_one_write_with_its_host_and_length():
    client = PostClient(allow_private=True)
    url = "http://hooks.example.com:8080/t/1?x=y"
    _, transport = connected(client, url, ANSWER_HEAD + b"ok")
    answer = await post(client, url, b'{"a":1}')
    assert (answer.status, answer.body) == (200, b"ok")
    [request] = transport.writes
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /t/1?x=y HTTP/1.1"
    assert b"host: hooks.example.com:8080" in head.split(b"\r\n")
    assert b"content-length: 7" in head.split(b"\r\n")
    assert body == b'{"a":1}'
    await client.aclose()


@pytest.mark.skipif(QUICKACK is None, reason="TCP_QUICKACK is Linux's")
async def test_every_wait_for_the_answer_acknowledges_at_once():
    """A receiver with Nagle's algorithm on holds its answer's body until its head is
    acknowledged; a delayed ACK would hold that 40 ms. Counted: TCP_QUICKACK before each wait
    (the kernel clears it on its own); here the head and the body arrive apart."""
    client = PostClient(allow_private=True)
    url = "http://hooks.example.com/hook"
    _, transport = connected(client, url, ANSWER_HEAD, b"ok")
    assert (await post(client, url, b"{}")).body == b"ok"
    assert transport.socket.options.count((socket.IPPROTO_TCP, QUICKACK, 1)) == 2
    await client.aclose()


async def test_a_connection_is_kept_after_a_whole_answer_and_dropped_after_a_cut_one():
    client = PostClient(allow_private=True)
    url = "http://hooks.example.com/hook"
    kept_wire, kept = connected(client, url, ANSWER_HEAD + b"ok")
    await post(client, url, b"{}")
    assert client._idle[target_of(url).key] == [kept_wire] and kept.ended is None

    _, cut = connected(client, url, ANSWER_HEAD + b"o")  # one byte short, then silence
    answer = await post(client, url, b"{}")  # on the newest idle connection: the cut one
    assert (answer.status, answer.body) == (200, b"o")
    assert client._idle[target_of(url).key] == [kept_wire] and cut.ended == "abort"
    await client.aclose()
    assert kept.ended == "close"  # an idle connection is let go with a FIN, not a reset


@pytest.mark.parametrize(
    ("url", "port", "authority", "path"),
    [
        ("https://h.example.com/\u00e4", 443, b"h.example.com", b"/%C3%A4"),
        ("http://[::1]:81", 81, b"[::1]:81", b"/"),
        ("http://h.example.com/%2F?q=%41", 80, b"h.example.com", b"/%2F?q=%41"),
        ("http://h.example.com:0/x", 0, b"h.example.com:0", b"/x"),  # not the default port
    ],
)
def test_targets(url: str, port: int, authority: bytes, path: bytes) -> None:
    target = target_of(url)
    assert (target.port, target.authority, target.path) == (port, authority, path)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://h.example.com/x",
        "http:///x",
        "http://u:p@h.example.com/",
        "http://h:99999/",
        "http://h.example.com/a b",
    ],
)
def test_urls_that_go_nowhere_allowed(url: str) -> None:
    with pytest.raises(UnsupportedURL):
        target_of(url)


class ClosingReceiver:
    """A blocking receiver in a thread: answers one request per connection, then closes that
    connection when told to (without saying so beforehand: no Connection: close)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.close_now = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                request = b""
                while not request.endswith(b"{}"):
                    request += conn.recv(65536)
                conn.sendall(ANSWER_HEAD + b"ok")
                self.close_now.wait(5)
            self.closed.set()


async def test_an_idle_connection_its_receiver_closed_is_not_reused():
    """The receiver's FIN is in the kernel but the event loop has not read it yet (the loop is
    held until the close is done): the pool's poll of the socket sees it, and the next request
    goes on a new connection instead of failing on the closed one."""
    receiver = ClosingReceiver()
    client = PostClient(allow_private=True)
    url = f"http://127.0.0.1:{receiver.port}/hook"
    try:
        assert (await post(client, url, b"{}")).status == 200
        receiver.close_now.set()
        assert receiver.closed.wait(5)  # blocking: the loop does not run meanwhile
        receiver.close_now.clear()
        receiver.closed.clear()
        answer_task = asyncio.create_task(post(client, url, b"{}"))
        await asyncio.sleep(0)
        receiver.close_now.set()
        assert (await answer_task).status == 200
        assert receiver.connections == 2
    finally:
        await client.aclose()
        receiver.listener.close()
