"""outbound/transport.py's stream: a request's head and body leave in one send, every read asks
for an immediate ACK (both counted), and a real exchange through the guarded client is
unchanged by it."""

from __future__ import annotations

import asyncio
import socket

import httpcore
import pytest

from callvault.outbound.transport import QUICKACK, CoalescingStream, outbound_client
from tests.security.receiver import Receiver


class RecordingSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


class CountingStream(httpcore.AsyncNetworkStream):
    """An inner stream that records every write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.socket = RecordingSocket()

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.writes.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return b""

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> object:
        return self.socket if info == "socket" else None


async def test_a_head_and_its_body_go_in_one_write_before_the_answer_is_read():
    inner = CountingStream()
    stream = CoalescingStream(inner)
    await stream.write(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
    await stream.write(b"body")
    await stream.write(b"")  # h11's end of a Content-Length body
    assert await stream.read(1024) == b""
    assert inner.writes == [b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"]


async def test_a_head_without_a_body_is_sent_before_the_answer_is_read():
    inner = CountingStream()
    stream = CoalescingStream(inner)
    await stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert inner.writes == []
    await stream.read(1024)
    assert inner.writes == [b"GET / HTTP/1.1\r\n\r\n"]


@pytest.mark.skipif(QUICKACK is None, reason="TCP_QUICKACK is Linux's")
async def test_every_read_acknowledges_at_once():
    """A receiver with Nagle's algorithm on holds its answer's body until its head is
    acknowledged; a delayed ACK would hold that 40 ms. Counted: TCP_QUICKACK before each read
    (the kernel clears it on its own)."""
    inner = CountingStream()
    stream = CoalescingStream(inner)
    await stream.write(b"POST / HTTP/1.1\r\n\r\n")
    for _ in range(3):
        await stream.read(1024)
    assert inner.socket.options == [(socket.IPPROTO_TCP, QUICKACK, 1)] * 3


async def test_requests_through_the_guarded_client_arrive_whole_on_one_connection():
    receiver = await Receiver().start()
    try:
        async with outbound_client(allow_private=True) as client:
            for n in range(3):
                response = await client.post(f"{receiver.url}/hook", content=b"x" * (n + 1) * 1000)
                assert response.status_code == 200
                await asyncio.sleep(0)
        assert [len(r.body) for r in receiver.received] == [1000, 2000, 3000]
    finally:
        await receiver.stop()
