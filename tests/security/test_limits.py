"""Request body limits (limits.py): Telnyx 413 from Content-Length or mid-stream, ingest exempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from callvault.errors import install_error_handlers
from callvault.limits import INGEST_PATH, InputLimits, JsonNulScanner

LIMIT = 1000


class Note(BaseModel):
    text: str


def limited_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(InputLimits, max_bytes=LIMIT)

    @app.post("/v2/notes")
    async def notes(note: Note) -> dict[str, int]:
        return {"length": len(note.text)}

    @app.post("/v2/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.post(INGEST_PATH)
    async def ingest(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"length": size}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=limited_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "190002"
    assert error["title"] == "Payload too large"
    assert str(LIMIT) in error["detail"]


async def chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    yield b'{"text": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def chunks_with_nul() -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"text": "abc\\'
        yield b"u0000"
        yield b'"}'

    return gen()


async def test_a_body_under_the_limit_passes(client):
    response = await client.post("/v2/notes", json={"text": "x" * (LIMIT - 50)})
    assert response.json() == {"length": LIMIT - 50}


async def test_a_declared_content_length_over_the_limit_is_refused_before_the_app(client):
    assert_413(await client.post("/v2/notes", json={"text": "x" * LIMIT}))


async def test_a_chunked_body_over_the_limit_is_refused_while_streaming(client):
    response = await client.post(
        "/v2/notes", content=chunks(LIMIT * 5), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_413(response)


async def test_a_chunked_body_under_the_limit_passes(client):
    response = await client.post(
        "/v2/notes", content=chunks(LIMIT // 2), headers={"content-type": "application/json"}
    )
    assert response.json() == {"length": LIMIT // 2}


async def test_a_lying_content_length_does_not_let_a_larger_body_through(client):
    # the app reads the raw body; what counts is what arrives, not what was declared
    request = client.build_request("POST", "/v2/raw", content=chunks(LIMIT * 3))
    request.headers["content-length"] = "10"
    assert_413(await client.send(request))


async def test_the_limit_applies_to_unknown_routes_and_get_requests_too(client):
    assert_413(await client.post("/v2/nowhere", content=b"x" * (LIMIT + 1)))
    assert_413(await client.request("GET", "/v2/notes", content=b"x" * (LIMIT + 1)))


async def test_the_ingest_endpoint_is_exempt(client):
    response = await client.post(INGEST_PATH, content=chunks(LIMIT * 20))
    assert response.json()["length"] > LIMIT * 20


async def test_a_streaming_response_is_not_buffered():
    """The first chunk reaches the server before the app produces the second one."""
    first_chunk_sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        # a buffering middleware would hold "first" back until the body ends: deadlock
        await asyncio.wait_for(first_chunk_sent.wait(), timeout=5)
        yield b"second"

    app = FastAPI()
    app.add_middleware(InputLimits, max_bytes=LIMIT)

    @app.get("/v2/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(body())

    messages: list[dict] = []

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        messages.append(message)
        if message.get("body") == b"first":
            first_chunk_sent.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v2/stream",
        "raw_path": b"/v2/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("t", 80),
        "client": ("c", 1),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    bodies = [m.get("body") for m in messages if m["type"] == "http.response.body"]
    assert b"first" in bodies and b"second" in bodies


@pytest.mark.parametrize(
    ("body", "has_nul"),
    [
        (rb'{"a": "\u0000"}', True),
        (rb'{"a": "x\u0000y", "b": 1}', True),
        (rb'{"a": "\\u0000"}', False),  # an escaped backslash, then the text "u0000"
        (rb'{"a": "\\\u0000"}', True),  # an escaped backslash, then a NUL
        (rb'{"a": "u0000", "b": "\u00001"}', True),
        (rb'{"a": "\u00e9 \u0001"}', False),
        (b'{"a": "plain"}', False),
    ],
)
def test_the_json_nul_scanner_finds_nul_escapes_wherever_the_chunks_split(body, has_nul):
    for split in range(len(body) + 1):
        scanner = JsonNulScanner()
        assert (scanner.feed(body[:split]) or scanner.feed(body[split:])) is has_nul, split


def test_the_scanner_refuses_when_a_backslash_run_outgrows_what_it_keeps():
    scanner = JsonNulScanner()
    assert not scanner.feed(b'{"a": "' + b"\\" * 10_000)
    assert scanner.feed(b'u0000"}')


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v2/notes", {"content": rb'{"text": "a\u0000b"}'}),
        ("POST", "/v2/notes", {"content": chunks_with_nul()}),
        ("GET", "/v2/notes%00", {}),
        ("GET", "/v2/notes?filter=a%00b", {}),
    ],
)
async def test_nul_characters_are_refused_in_path_query_and_body(client, method, path, kwargs):
    response = await client.request(
        method, path, headers={"content-type": "application/json"}, **kwargs
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "10015"
    assert "NUL" in response.json()["errors"][0]["detail"]


async def test_an_escaped_backslash_before_u0000_is_ordinary_text(client):
    response = await client.post(
        "/v2/notes", content=rb'{"text": "\\u0000"}', headers={"content-type": "application/json"}
    )
    assert response.json() == {"length": len("\\u0000")}
