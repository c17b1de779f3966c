"""One POST through the webhook client with the timeouts the webhook uses (for the tests)."""

from __future__ import annotations

from callvault.outbound.post_client import Answer, PostClient


async def post(client: PostClient, url: str, body: bytes = b"{}") -> Answer:
    return await client.post(
        url,
        body,
        [("content-type", "application/json")],
        connect_timeout=3.0,
        answer_timeout=2.0,
        answer_wait=0.25,
        keep_bytes=64 * 1024,
    )
