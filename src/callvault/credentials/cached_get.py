"""`GET /v2/custom_storage_credentials/{id}` answered from the answer cache before FastAPI
routes the request: a pure ASGI middleware.

Why: with the answer cached (credentials/answers.py), routing and dependency solving were
most of what the GET still cost — ~0.1 ms of CPU, 0.56 x the requests/s of `GET /health`
where issue 14 asks for 0.6 x (docs/performance.md). It answers only what it can answer
exactly as the route would: a GET without a query string, a Bearer key this process has
cached and nobody revoked since (accounts/cache.py), an answer rendered for that account at
the current credentials generation. Everything else — a first GET, an unknown key, a query
parameter (refused by the route with its 400), a changed row, a database that does not answer within
`GENERATION_WAIT_SECS` — goes on to the route, which renders, fills the cache and answers
errors in the Telnyx format (a 503 when the database is away).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from callvault.auth import cached_key, mark_used
from callvault.credentials.answers import answer_cache
from callvault.generation import generation_reader
from callvault.runtime import Runtime

PREFIX = "/v2/custom_storage_credentials/"
# how long the generation may take here before the request goes on to the route: bounded, so
# that a database that is away is waited for about once, by the route, not twice
GENERATION_WAIT_SECS = 1.0


class CachedCredentialsGet:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._cached(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _cached(self, scope: Scope) -> bytes | None:
        if scope["method"] != "GET" or scope["query_string"]:
            return None
        path: str = scope["path"]
        connection_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if not connection_id or "/" in connection_id:
            return None
        api_key = bearer_key(scope["headers"])
        if api_key is None:
            return None
        try:
            async with asyncio.timeout(GENERATION_WAIT_SECS):
                # one read serves both checks: the key not revoked, the answer not stale
                generation = await generation_reader(self.runtime).current()
        except Exception:  # slow or away: the route meets it too and answers it properly
            return None
        holder = cached_key(self.runtime, api_key, generation)
        if holder is None:
            return None
        answer = answer_cache(self.runtime).get(connection_id, holder.account.id, generation)
        if answer is not None:
            await mark_used(self.runtime, holder.key_id)
        return answer


def bearer_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            return key if scheme.lower() == "bearer" and key else None
    return None
