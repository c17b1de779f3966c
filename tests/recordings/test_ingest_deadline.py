"""A client that stalls or trickles its body cannot hold an ingest forever: 408, nothing kept."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator

import pytest

from callvault.config import Settings
from callvault.recordings.upload import BodyPace
from tests.conftest import LiveServer
from tests.recordings.conftest import CONTENT_TYPE, metadata_for, multipart_body
from tests.recordings.samples import make_wav


def test_wait_limit_is_the_idle_limit_or_the_rate_deadline() -> None:
    pace = BodyPace(idle_secs=10, min_bytes_per_sec=100)
    assert pace.wait_limit(0, 0) == 10  # the first bytes: the idle limit
    assert pace.wait_limit(9, 0) == 1  # nothing after 9 s: 1 s left before the rate fails
    assert pace.wait_limit(15, 1000) == 5  # 1000 bytes buy 10 s past the first 10
    assert pace.wait_limit(30, 100) == 0
    assert BodyPace(idle_secs=3, min_bytes_per_sec=0).wait_limit(100, 0) == 3
    assert BodyPace.from_env({"CALLVAULT_INGEST_IDLE_SECS": "2"}).idle_secs == 2
    with pytest.raises(ValueError):
        BodyPace.from_env({"CALLVAULT_INGEST_IDLE_SECS": "0"})


@pytest.fixture
def slow_server(settings: Settings) -> Iterator[LiveServer]:
    environ = {
        **settings.environ,
        "CALLVAULT_INGEST_IDLE_SECS": "1",
        "CALLVAULT_INGEST_MIN_BYTES_PER_SEC": "2000",
    }
    server = LiveServer(dataclasses.replace(settings, environ=environ), run_worker=False).start()
    yield server
    server.stop()


async def send_slowly(server: LiveServer, body: bytes, token: str, pause: float) -> bytes:
    """Headers and the first 100 bytes at once, then one byte per `pause` (pause > 5: stall)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        "POST /internal/v1/recordings HTTP/1.1\r\nHost: callvault\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[:100])
    await writer.drain()

    async def trickle() -> None:
        for i in range(100, len(body)):
            await asyncio.sleep(pause)
            writer.write(body[i : i + 1])
            await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(30):
            answer = await reader.read(65536)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    return answer


@pytest.mark.parametrize("pause", [60.0, 0.2], ids=["stalled", "trickling"])
async def test_slow_bodies_are_cut_off_with_408(
    slow_server: LiveServer, connection_id: str, pause: float
) -> None:
    settings = slow_server.settings
    body = multipart_body(
        [
            ("metadata", json.dumps(metadata_for(connection_id)).encode(), None),
            ("audio", make_wav(0.5), "a.wav"),
        ]
    )
    started = time.monotonic()
    answer = await send_slowly(slow_server, body, settings.ingest_token, pause)
    took = time.monotonic() - started
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 408 " in status_line, answer[:300]
    error = json.loads(rest.split(b"\r\n\r\n", 1)[1])["errors"][0]
    assert error["title"] == "Request timeout" and "too slowly" in error["detail"]
    assert took < 10  # 1 s idle limit (or 1 s + 200 bytes at 2000 B/s), plus a loaded machine
    # nothing of it was kept: no temp file in incoming/
    incoming = settings.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
