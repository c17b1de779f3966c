"""One HTTP request of a delivery, and what its outcome is called.

- 2xx: delivered. 408, 429, 5xx, timeouts, connection errors: worth another round. Any other
  answer (3xx: redirects are never followed; other 4xx) or an address refused by policy: that
  URL will not take it.
- The error text is ours, never the library's: it may carry the URL (a customer's token in it),
  a resolver's text or the peer's bytes.
- What the delivery record keeps of the exchange: the request's headers (signature redacted),
  the answer's headers (the receiver's credentials dropped) and the start of its body.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callvault.db import utcnow
from callvault.metrics import WEBHOOK_SECONDS
from callvault.outbound.post_client import (
    Answer,
    ExchangeBroken,
    PhaseTimeout,
    PostClient,
    PostFailed,
)
from callvault.outbound.transport import PolicyRefusal
from callvault.webhooks.recorded_headers import recorded_request_headers, recorded_response_headers
from callvault.webhooks.signing import signed_headers

DEFAULT_TIMEOUT_SECS = 2.0
CONNECT_TIMEOUT_SECS = 3.0  # name resolution + TCP + TLS, on top of the answer's timeout
MAX_ERROR_CHARS = 500
# a receiver's answer is read up to this size and for at most this long, so that the
# connection can be reused; beyond either, the connection is closed instead
ANSWER_KEEP_BYTES = 64 * 1024
ANSWER_WAIT_SECS = 0.25
# what the delivery record (GET /v2/webhook_deliveries) keeps of an answer
RECORDED_BODY_BYTES = 4 * 1024
RECORDED_HEADER_CHARS = 10 * 1024


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"  # this URL will not take it: do not retry it


def verdict_for_status(status_code: int) -> Verdict:
    if 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code in (408, 429) or status_code >= 500:
        return Verdict.RETRY
    return Verdict.REFUSED


@dataclass(frozen=True)
class AttemptResult:
    url: str
    verdict: Verdict
    status_code: int | None
    latency_ms: float
    error: str | None
    # the exchange as the delivery record shows it
    started_at: datetime | None = None
    finished_at: datetime | None = None
    request_headers: list[list[str]] | None = None
    response_headers: list[list[str]] | None = None
    response_body: str | None = None


def header_pairs(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Headers as `[[name, value], ...]` (the spec's http_headers), cut at 10 kB in total."""
    pairs: list[list[str]] = []
    size = 0
    for name, value in headers:
        size += len(name) + len(value)
        if size > RECORDED_HEADER_CHARS:
            break
        pairs.append([name, value])
    return pairs


def recorded_body(raw: bytes | bytearray) -> str:
    """The first 4 kB of an answer as text; NUL (which PostgreSQL cannot store) replaced."""
    text = bytes(raw[:RECORDED_BODY_BYTES]).decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd")


ADDRESS_REFUSED = (
    "refused: the URL resolves to what is not a public address "
    "(set CALLVAULT_ALLOW_PRIVATE_NETWORKS=true to allow private networks)"
)
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connect timed out",
    errno.EPIPE: "connection closed while sending",
}


def failure_reason(exc: BaseException) -> str:
    """A classified reason for a failed request: never the library's message, which can carry
    the URL, a resolver's text or the peer's bytes (pure)."""
    if isinstance(exc, PhaseTimeout):
        return str(exc)
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for link in chain:
        if isinstance(link, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(link, socket.gaierror):
            return "name does not resolve"
        if isinstance(link, OSError) and link.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[link.errno]
    if isinstance(exc, ExchangeBroken):
        return "the receiver broke the HTTP protocol or closed the connection"
    if isinstance(exc, PostFailed):
        return str(exc)  # ours: it names the failure, never the URL
    return f"request failed ({type(exc).__name__})"


def timeout_for(webhook_timeout_secs: int | None) -> float:
    """The application's timeout, else the documented default of 2 s (0 counts as unset)."""
    return float(webhook_timeout_secs) if webhook_timeout_secs else DEFAULT_TIMEOUT_SECS


class Sender:
    """Signs and posts delivery bodies; one client per worker (connections kept alive)."""

    def __init__(self, *, allow_private_networks: bool) -> None:
        self.client = PostClient(allow_private=allow_private_networks)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(
        self, url: str, body: str, key: Ed25519PrivateKey, limit_secs: float
    ) -> AttemptResult:
        """One signed request; every failure is classified into the result, never raised."""
        headers = signed_headers(key, int(time.time()), body)
        started_at = utcnow()
        started = time.perf_counter()
        answer: Answer | None = None
        error: str | None = None
        try:
            # connect (DNS, address check, TCP, TLS) and the answer have separate budgets:
            # a slow connect must not eat the receiver's time to answer (a receiver that took
            # the webhook but answered after a shortened wait is sent it again: a duplicate).
            answer = await self.client.post(
                url,
                body.encode(),
                headers.items(),
                connect_timeout=CONNECT_TIMEOUT_SECS,
                answer_timeout=limit_secs,
                answer_wait=ANSWER_WAIT_SECS,
                keep_bytes=ANSWER_KEEP_BYTES,
            )
            verdict = verdict_for_status(answer.status)
            if verdict is not Verdict.DELIVERED:
                error = f"HTTP {answer.status}"
        except PolicyRefusal:
            verdict, error = Verdict.REFUSED, ADDRESS_REFUSED
        except PostFailed as exc:
            # never a library's own text: it may carry the URL (a customer's token in it)
            verdict, error = Verdict.RETRY, failure_reason(exc)
        latency_ms = (time.perf_counter() - started) * 1000
        WEBHOOK_SECONDS.observe(latency_ms / 1000)
        return AttemptResult(
            url=url,
            verdict=verdict,
            status_code=answer.status if answer else None,
            latency_ms=round(latency_ms, 3),
            error=error[:MAX_ERROR_CHARS] if error else None,
            started_at=started_at,
            finished_at=utcnow(),
            request_headers=header_pairs(recorded_request_headers(headers.items())),
            response_headers=_recorded_answer_headers(answer) if answer else None,
            response_body=recorded_body(answer.body) if answer else None,
        )


def _recorded_answer_headers(answer: Answer) -> list[list[str]]:
    return header_pairs(
        recorded_response_headers(
            (name.decode("latin-1"), value.decode("latin-1"))  # as the receiver wrote them
            for name, value in answer.headers
        )
    )
