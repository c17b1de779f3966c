"""Limits on every request, before the app sees it: a pure ASGI middleware (no buffering, so
streaming stays streaming).

- Body size: every /v2 body is a small JSON document, so anything over `max_bytes` is refused
  with a Telnyx 413: at once when Content-Length says so, else as soon as the streamed (chunked)
  body passes the limit. The ingest endpoint carries whole recordings and enforces its own,
  much larger, limit, so its body is exempt here.
- Body time: the whole body must arrive within `body_timeout_secs` (CALLVAULT_BODY_TIMEOUT_SECS,
  default 30 s; a /v2 body is at most `max_bytes`), else a Telnyx 408: a client trickling a
  body cannot hold a request open (the header deadline is serving.py's; ingest has its pace).
- NUL characters: PostgreSQL cannot store U+0000 in text, so a NUL in any value would end in a
  database error (a 500) deep inside whichever service passed it on. They are refused here, in
  the path, the query string and JSON bodies (`\\u0000`), with a Telnyx 422, the same on SQLite
  and PostgreSQL. No legitimate value of this API contains one.

Not `BaseHTTPMiddleware`: that one wraps the body in its own streams and breaks streaming
responses (recording downloads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callvault.errors import ApiError, invalid, request_timeout, too_large

INGEST_PATH = "/internal/v1/recordings"
RTPENGINE_INGEST_PATH = "/internal/v1/rtpengine/recordings"  # rtpengine's notify (handoff/)
NUL_DETAIL = "The request contains a NUL character (U+0000), which no value may contain."
# how far back a JSON escape is looked at across chunk boundaries
_TAIL_BYTES = 4096
BODY_TIMEOUT_ENV = "CALLVAULT_BODY_TIMEOUT_SECS"
DEFAULT_BODY_TIMEOUT_SECS = 30.0


def body_timeout_secs(environ: Mapping[str, str]) -> float:
    value = float(environ.get(BODY_TIMEOUT_ENV) or DEFAULT_BODY_TIMEOUT_SECS)
    if not value > 0:
        raise ValueError(f"{BODY_TIMEOUT_ENV} must be a positive number of seconds")
    return value


def body_too_slow(seconds: float) -> ApiError:
    return request_timeout(f"The request body did not arrive within {seconds:g} s; send it again.")


class RefusedBody(Exception):
    """Raised from `receive` when the streamed body breaks a limit; carries the answer."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.items[0].detail)
        self.error = error


class JsonNulScanner:
    """Finds a JSON `\\u0000` escape in a body fed chunk by chunk (an escaped backslash before
    `u0000`, as in `"\\\\u0000"`, is ordinary text and is not one)."""

    def __init__(self) -> None:
        self._tail = b""
        self._dropped = False  # bytes before the tail were let go

    def feed(self, chunk: bytes) -> bool:
        window = self._tail + chunk
        # a match inside the old tail was examined on the previous call, with more context
        start = max(0, len(self._tail) - 4)
        while (found := window.find(b"u0000", start)) != -1:
            run = 0
            while found - run - 1 >= 0 and window[found - run - 1] == 0x5C:  # backslash
                run += 1
            # an odd run of backslashes escapes the "u"; a run reaching back past what we kept
            # is ambiguous and counted as an escape (refusing is the safe side)
            if run % 2 == 1 or (run and found - run == 0 and self._dropped):
                return True
            start = found + 1
        self._dropped = self._dropped or len(window) > _TAIL_BYTES
        self._tail = window[-_TAIL_BYTES:]
        return False


class InputLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        exempt_paths: Collection[str] = (INGEST_PATH, RTPENGINE_INGEST_PATH),
        body_timeout_secs: float = DEFAULT_BODY_TIMEOUT_SECS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_secs = body_timeout_secs
        self.exempt_paths = frozenset(path.rstrip("/") for path in exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await invalid(NUL_DETAIL).response()(scope, receive, send)
            return
        if scope["path"].rstrip("/") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large().response()(scope, receive, send)
            return
        await self._run_with_body_limits(scope, receive, send)

    async def _run_with_body_limits(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs the app on a `receive` that refuses the body as soon as it breaks a limit, and
        answers with the refusal unless the app had already started its response."""
        received = 0
        scanner = JsonNulScanner()
        refused: ApiError | None = None
        response_started = False
        body_complete = False
        loop = asyncio.get_running_loop()
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, refused, body_complete, deadline
            if body_complete:
                # after the body, receive() waits for a disconnect (streaming answers): no limit
                return await receive()
            deadline = deadline or loop.time() + self.body_timeout_secs
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refused = body_too_slow(self.body_timeout_secs)
                raise RefusedBody(refused) from None
            if message["type"] == "http.request":
                body_complete = not message.get("more_body", False)
                body = message.get("body", b"")
                received += len(body)
                if received > self.max_bytes:
                    refused = self._too_large()
                elif scanner.feed(body):
                    refused = invalid(NUL_DETAIL)
                if refused is not None:
                    raise RefusedBody(refused)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused is not None:
                # the app caught RefusedBody (FastAPI turns body errors into a 400): its
                # answer is dropped, ours is sent below
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except RefusedBody:
            if response_started:
                raise
        if refused is not None and not response_started:
            await refused.response()(scope, receive, send)

    def _too_large(self) -> ApiError:
        return too_large(f"The request body is larger than {self.max_bytes} bytes.")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length itself
    return None
