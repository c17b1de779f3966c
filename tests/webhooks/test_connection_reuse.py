"""Webhook requests reuse their connection when the receiver's answer is small (keep-alive),
and a large or dripping answer neither blocks nor changes the verdict: its status decides.

A raw asyncio HTTP/1.1 server counts connections; the Deliverer's own client sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callvault.runtime import Runtime
from callvault.webhooks.attempt import ANSWER_KEEP_BYTES, Verdict
from callvault.webhooks.delivery import Deliverer
from callvault.webhooks.repository import DeliveredRecording


@dataclass
class CountingServer:
    """Answers every POST with `status` and `body` (sent in `pieces`, `pause` s apart)."""

    status: int = 200
    body: bytes = b'{"ok":true}'
    pieces: int = 1
    pause: float = 0.0
    connections: int = 0
    requests: int = 0
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)

    async def start(self) -> CountingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\n\r\n".encode()
                )
                step = -(-len(self.body) // self.pieces)
                for start in range(0, len(self.body), step):
                    writer.write(self.body[start : start + step])
                    await writer.drain()
                    if self.pause:
                        await asyncio.sleep(self.pause)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def no_link(recording: DeliveredRecording) -> str | None:
    return None


@pytest.fixture
async def deliverer(runtime: Runtime) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(runtime, fresh_link=no_link)
    yield deliverer
    await deliverer.aclose()


async def post_twice(deliverer: Deliverer, server: CountingServer) -> list[Verdict]:
    key = Ed25519PrivateKey.generate()
    verdicts = []
    for _ in range(2):
        result = await deliverer.sender.post(server.url, '{"data":{}}', key, 2.0)
        verdicts.append(result.verdict)
    return verdicts


async def test_a_small_answer_keeps_the_connection_for_the_next_webhook(
    deliverer: Deliverer,
) -> None:
    server = await CountingServer().start()
    try:
        assert await post_twice(deliverer, server) == [Verdict.DELIVERED, Verdict.DELIVERED]
    finally:
        await server.stop()
    assert server.requests == 2 and server.connections == 1


async def test_a_large_answer_is_let_go_with_its_connection(deliverer: Deliverer) -> None:
    server = await CountingServer(body=b"x" * (ANSWER_KEEP_BYTES * 4)).start()
    try:
        assert await post_twice(deliverer, server) == [Verdict.DELIVERED, Verdict.DELIVERED]
    finally:
        await server.stop()
    assert server.requests == 2 and server.connections == 2


async def test_a_dripping_answer_does_not_hold_up_the_delivery(deliverer: Deliverer) -> None:
    # 200 at once, then the body a byte every 0.3 s: the status decides, within a moment
    server = await CountingServer(body=b"0123456789", pieces=10, pause=0.3).start()
    key = Ed25519PrivateKey.generate()
    try:
        result = await deliverer.sender.post(server.url, '{"data":{}}', key, 2.0)
    finally:
        await server.stop()
    assert result.verdict is Verdict.DELIVERED and result.status_code == 200
    assert result.error is None
    assert result.latency_ms < 1000


async def test_a_refusal_still_reads_as_one(deliverer: Deliverer) -> None:
    server = await CountingServer(status=503, body=b"busy").start()
    try:
        assert await post_twice(deliverer, server) == [Verdict.RETRY, Verdict.RETRY]
    finally:
        await server.stop()
    assert server.connections == 1
