"""Delivering one webhook event: one round per claim — the primary URL, then at once the
failover URL if the primary failed — every request recorded as a WebhookAttempt.

- 2xx: delivered. 408, 429, 5xx, timeouts, connection errors: retried on the schedule
  (webhooks/schedule.py). Any other answer (3xx: redirects are never followed; other 4xx) or an
  address refused by policy: that URL will not take it.
- A round is delivered if any URL took it; it failed for good if every URL it tried refused it
  for good; otherwise it is retried, until the schedule runs out.
- `meta.attempt` is the round number: the primary and the failover request of one round carry
  the same number and differ in `meta.delivered_to`. The event id never changes.
- An inactive or deleted application: the event is marked failed without a request (kept for
  the record; `callvault webhooks retry` sends it again once the application is active).
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts.models import Account
from callvault.accounts.service import signing_key
from callvault.db import database_unavailable, transaction, utcnow
from callvault.metrics import JOB_CRASHES, WEBHOOK_ATTEMPTS, WEBHOOK_SECONDS
from callvault.outbound.transport import AddressRefused, outbound_client
from callvault.runtime import Runtime
from callvault.webhooks import payloads, repository
from callvault.webhooks.models import EventStatus, WebhookAttempt
from callvault.webhooks.recorded_headers import recorded_request_headers, recorded_response_headers
from callvault.webhooks.schedule import DEFAULT_SCHEDULE, next_delay, schedule_from_env
from callvault.webhooks.service import default_store_link, in_default_store
from callvault.webhooks.signing import signed_headers

log = structlog.get_logger("callvault.webhooks")

DEFAULT_TIMEOUT_SECS = 2.0
CONNECT_TIMEOUT_SECS = 3.0  # name resolution + TCP + TLS, on top of the answer's timeout
MAX_ERROR_CHARS = 500
# a receiver's answer is read (and thrown away) up to this size and for at most this long, so
# that the connection can be reused; beyond either, the connection is closed instead
ANSWER_KEEP_BYTES = 64 * 1024
ANSWER_WAIT_SECS = 0.25
# what the delivery record (GET /v2/webhook_deliveries) keeps of an answer
RECORDED_BODY_BYTES = 4 * 1024
RECORDED_HEADER_CHARS = 10 * 1024
# how long a sent round's outcome is kept trying to be written while the database is away
RECORD_PATIENCE_SECS = 120.0


# more writes for a round's own transaction (see Deliverer.deliver_known)
Also = Callable[[AsyncSession], Awaitable[None]]


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


def round_verdict(results: Sequence[AttemptResult]) -> Verdict:
    """Delivered if any URL took it; refused if every URL refused; else retry (pure)."""
    if any(r.verdict is Verdict.DELIVERED for r in results):
        return Verdict.DELIVERED
    if results and all(r.verdict is Verdict.REFUSED for r in results):
        return Verdict.REFUSED
    return Verdict.RETRY


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


def timeout_reason(exc: BaseException, limit_secs: float) -> str:
    """Which phase timed out, in our own words (pure)."""
    phases: dict[type[BaseException], str] = {
        httpx.ConnectTimeout: "connect",
        httpx.ReadTimeout: "waiting for the answer",
        httpx.WriteTimeout: "sending",
        httpx.PoolTimeout: "waiting for a connection",
    }
    phase = phases.get(type(exc))
    where = f" ({phase})" if phase else ""
    return f"timed out after {limit_secs:g} s{where}"


def failure_reason(exc: BaseException) -> str:
    """A classified reason for a failed request: never the library's message, which can carry
    the URL, a resolver's text or the peer's bytes (pure)."""
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
    text = str(exc).lower()
    if "cannot resolve" in text or "name or service not known" in text:
        return "name does not resolve"
    if "ssl" in text or "certificate" in text:
        return "TLS handshake failed"
    if "refused" in text:
        return "connection refused"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the receiver broke the HTTP protocol or closed the connection"
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.NetworkError):
        return "connection lost during the exchange"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "unsupported URL scheme"
    return f"request failed ({type(exc).__name__})"


def timeout_for(webhook_timeout_secs: int | None) -> float:
    """The application's timeout, else the documented default of 2 s (0 counts as unset)."""
    return float(webhook_timeout_secs) if webhook_timeout_secs else DEFAULT_TIMEOUT_SECS


class Deliverer:
    """Sends events; one per worker, sharing one HTTP client (connection reuse)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        rng: random.Random | None = None,
        schedule: tuple[float, ...] | None = None,
    ) -> None:
        self.runtime = runtime
        self.rng = rng or random.Random()  # jitter, not a secret
        # CALLVAULT_WEBHOOK_SCHEDULE is this domain's setting: parsed here, not in config.py
        self.schedule = schedule or schedule_from_env(runtime.settings.environ) or DEFAULT_SCHEDULE
        self.client: httpx.AsyncClient = outbound_client(
            allow_private=runtime.settings.allow_private_networks,
            timeout=DEFAULT_TIMEOUT_SECS,
        )
        self._keys: dict[str, Ed25519PrivateKey] = {}

    async def aclose(self) -> None:
        await self.client.aclose()

    def _signing_key(self, account: Account) -> Ed25519PrivateKey:
        key = self._keys.get(account.id)
        if key is None:
            key = self._keys[account.id] = signing_key(account, self.runtime.settings.keyring)
        return key

    async def deliver(self, event_id: str, owner: str) -> Verdict | None:
        """One delivery round of a pending event leased to `owner`; returns its verdict
        (None when there was nothing to do: not pending, or the lease is gone)."""
        # reads only (finish_round is conditional on the lease): no write lock
        async with self.runtime.sessions() as session:
            context = await repository.delivery_context(session, event_id, owner)
        if context is None:
            return None
        return await self.deliver_known(context, owner)

    async def deliver_known(
        self,
        context: repository.DeliveryContext,
        owner: str,
        *,
        also: Also | None = None,
    ) -> Verdict:
        """One round of an event leased to `owner` whose context is in memory already (made
        by this process: no read). `also` writes in the round's own transaction (the worker
        clears a deleted staging copy's key there: one commit fewer per recording)."""
        # every log line of this round names the event and what it is about
        with structlog.contextvars.bound_contextvars(
            event_id=context.event.id,
            recording_id=context.event.recording_id,
            connection_id=context.event.application_id,
        ):
            try:
                return await self._deliver_round(context, owner, also)
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing can be written: the lease expires, the round comes again
                return await self._record_crash(context, owner, exc)

    async def _record_crash(
        self, context: repository.DeliveryContext, owner: str, exc: Exception
    ) -> Verdict:
        """A round that crashed in our own code (e.g. a signing key that cannot be opened)
        counts as a failed attempt on the same schedule as any other: retried, then `failed`
        with the reason; never an endless loop."""
        event = context.event
        attempt = event.attempts + 1
        reason = f"internal error: {type(exc).__name__}"
        delay = next_delay(attempt, self.rng, self.schedule)
        values: dict[str, Any] = {"attempts": attempt, "last_error": reason}
        if delay is None:
            values.update(status=EventStatus.FAILED, next_attempt_at=None)
        else:
            values.update(next_attempt_at=utcnow() + timedelta(seconds=delay))
        async with transaction(self.runtime.sessions) as session:
            await repository.finish_round(session, event.id, owner, values)
        JOB_CRASHES.labels(job="webhook").inc()
        log.error(
            "webhook round crashed",
            error_type=type(exc).__name__,
            attempt=attempt,
            gave_up=delay is None,
        )
        return Verdict.REFUSED if delay is None else Verdict.RETRY

    async def _deliver_round(
        self, context: repository.DeliveryContext, owner: str, also: Also | None = None
    ) -> Verdict:
        event_id = context.event.id
        event, application = context.event, context.application
        if application is None or not application.active:
            why = "application deleted" if application is None else "application is inactive"
            async with transaction(self.runtime.sessions) as session:
                await repository.finish_round(
                    session,
                    event_id,
                    owner,
                    dict(
                        status=EventStatus.FAILED,
                        last_error=f"{why}: not sent",
                        next_attempt_at=None,
                    ),
                )
                if also is not None:
                    await also(session)
            log.info("webhook not sent", event_id=event_id, why=why)
            return Verdict.REFUSED

        payload: dict[str, Any] = event.payload
        recording = context.recording
        if event.event_type == payloads.SAVED and recording and in_default_store(recording):
            # default-store links live 600 s: every attempt gets a fresh one
            link = await default_store_link(self.runtime, recording)
            if link:
                payload = payloads.with_recording_url(payload, recording.format, link)

        attempt = event.attempts + 1
        key = self._signing_key(context.account)
        timeout = timeout_for(application.webhook_timeout_secs)
        urls = [application.webhook_event_url]
        if application.webhook_event_failover_url:
            urls.append(application.webhook_event_failover_url)
        results: list[AttemptResult] = []
        for url in urls:
            body = payloads.serialize(
                payloads.envelope(
                    event_id=event.id,
                    event_type=event.event_type,
                    api_version=event.api_version,
                    payload=payload,
                    occurred_at=event.occurred_at,
                    created_at=event.created_at,
                    attempt=attempt,
                    delivered_to=url,
                )
            )
            result = await self._post(url, body, key, timeout)
            results.append(result)
            if result.verdict is Verdict.DELIVERED:
                break

        verdict = round_verdict(results)
        now = utcnow()
        values: dict[str, Any] = {"attempts": attempt, "last_error": _summary(results)}
        if verdict is Verdict.DELIVERED:
            values.update(status=EventStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
            values["last_error"] = None
        else:
            delay = (
                None if verdict is Verdict.REFUSED else next_delay(attempt, self.rng, self.schedule)
            )
            if delay is None:
                values.update(status=EventStatus.FAILED, next_attempt_at=None)
                verdict = Verdict.REFUSED
            else:
                values.update(next_attempt_at=now + timedelta(seconds=delay))
        attempts = [
            WebhookAttempt(
                event_id=event.id,
                attempt=attempt,
                url=r.url,
                status_code=r.status_code,
                latency_ms=r.latency_ms,
                error=r.error,
                created_at=now,
                started_at=r.started_at,
                finished_at=r.finished_at,
                request_headers=r.request_headers,
                response_headers=r.response_headers,
                response_body=r.response_body,
            )
            for r in results
        ]
        kept = await self._record_round(event.id, owner, attempts, values, also)
        if not kept:
            log.warning("webhook lease lost during delivery", event_id=event.id)
        for r in results:
            WEBHOOK_ATTEMPTS.labels(outcome=_metric_outcome(r.verdict, verdict)).inc()
        _log_round(event.event_type, attempt, results, verdict, values.get("next_attempt_at"))
        return verdict

    async def _record_round(
        self,
        event_id: str,
        owner: str,
        attempts: list[WebhookAttempt],
        values: dict[str, Any],
        also: Also | None = None,
    ) -> bool:
        """Write the round's outcome. The requests were sent: if the database is away right
        now, the write is tried again (0.2 s, 0.4 s … 5 s apart, for up to RECORD_PATIENCE_SECS)
        instead of giving the round up, which would send it again once its lease expired (a
        duplicate at the receiver)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RECORD_PATIENCE_SECS
        pause = 0.2

        async def write(session: AsyncSession) -> bool:
            # fresh rows each try: a rolled-back session leaves them unusable
            await repository.add_attempts(session, [_copy(a) for a in attempts])
            kept = await repository.finish_round(session, event_id, owner, values)
            if also is not None:
                await also(session)
            return kept

        while True:
            try:
                # group commit (issue 24): the rounds whose answers are in share one commit,
                # taken at once (no timer), so the record follows the 2xx no later than before
                return await self.runtime.batch_writer.run(write)
            except Exception as exc:
                if not database_unavailable(exc) or loop.time() + pause > give_up_at:
                    raise
                log.warning("database unavailable: round not recorded yet", retry_in=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _post(
        self, url: str, body: str, key: Ed25519PrivateKey, limit_secs: float
    ) -> AttemptResult:
        headers = signed_headers(key, int(time.time()), body)
        started_at = utcnow()
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        response_headers: list[list[str]] | None = None
        kept = bytearray()
        try:
            # connect (DNS, address check, TCP, TLS) and the answer have separate budgets:
            # a slow connect must not eat the receiver's time to answer (a receiver that took
            # the webhook but answered after a shortened wait is sent it again: a duplicate).
            # The whole exchange stays bounded, not only each read (a receiver dripping bytes).
            timeouts = httpx.Timeout(limit_secs, connect=CONNECT_TIMEOUT_SECS)
            async with asyncio.timeout(CONNECT_TIMEOUT_SECS + limit_secs) as deadline:
                async with self.client.stream(
                    "POST", url, content=body.encode(), headers=headers, timeout=timeouts
                ) as response:
                    status_code = response.status_code
                    response_headers = header_pairs(
                        recorded_response_headers(
                            (name.decode("latin-1"), value.decode("latin-1"))
                            for name, value in response.headers.raw  # as the receiver wrote them
                        )
                    )
                    await _drain(response, deadline, kept)
            verdict = verdict_for_status(status_code)
            if verdict is not Verdict.DELIVERED:
                error = f"HTTP {status_code}"
        except AddressRefused:
            verdict, error = Verdict.REFUSED, ADDRESS_REFUSED
        except (TimeoutError, httpx.TimeoutException) as exc:
            budget = CONNECT_TIMEOUT_SECS if isinstance(exc, httpx.ConnectTimeout) else limit_secs
            verdict, error = Verdict.RETRY, timeout_reason(exc, budget)
        except httpx.HTTPError as exc:
            # never the library's own text: it may carry the URL (a customer's token in it)
            verdict, error = Verdict.RETRY, failure_reason(exc)
        latency_ms = (time.perf_counter() - started) * 1000
        WEBHOOK_SECONDS.observe(latency_ms / 1000)
        return AttemptResult(
            url=url,
            verdict=verdict,
            status_code=status_code,
            latency_ms=round(latency_ms, 3),
            error=error[:MAX_ERROR_CHARS] if error else None,
            started_at=started_at,
            finished_at=utcnow(),
            request_headers=header_pairs(recorded_request_headers(headers.items())),
            response_headers=response_headers,
            response_body=recorded_body(kept) if status_code is not None else None,
        )


def _copy(attempt: WebhookAttempt) -> WebhookAttempt:
    return WebhookAttempt(
        event_id=attempt.event_id,
        attempt=attempt.attempt,
        url=attempt.url,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
        created_at=attempt.created_at,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        request_headers=attempt.request_headers,
        response_headers=attempt.response_headers,
        response_body=attempt.response_body,
    )


async def _drain(
    response: httpx.Response, deadline: asyncio.Timeout, kept: bytearray | None = None
) -> None:
    """Read a small answer to its end, so that its connection carries the next webhook
    (keep-alive: no new TCP and TLS handshake, no new address check; measured on loopback:
    a tenth of a delivery's CPU). A large, slow or broken answer is let go, and the connection
    with it: the status decided already, the body is never looked at."""
    loop = asyncio.get_running_loop()
    when = deadline.when()
    budget = ANSWER_WAIT_SECS
    if when is not None:  # stay clear of the exchange's own deadline
        budget = min(budget, when - loop.time() - 0.05)
    if budget <= 0:
        return
    received = 0
    try:
        async with asyncio.timeout(budget):
            async for chunk in response.aiter_raw():
                if kept is not None and len(kept) < RECORDED_BODY_BYTES:
                    kept += chunk[: RECORDED_BODY_BYTES - len(kept)]
                received += len(chunk)
                if received > ANSWER_KEEP_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError):
        return


def _log_round(
    event_type: str,
    attempt: int,
    results: Sequence[AttemptResult],
    verdict: Verdict,
    next_attempt_at: object,
) -> None:
    """One line per round. URLs stay out (a customer may put a token in one): which URL took
    it is `delivered_to` = primary or failover."""
    fields: dict[str, Any] = {
        "event_type": event_type,
        "attempt": attempt,
        "status_codes": [r.status_code for r in results],
        "latency_ms": [r.latency_ms for r in results],
    }
    if verdict is Verdict.DELIVERED:
        taken = next(i for i, r in enumerate(results) if r.verdict is Verdict.DELIVERED)
        delivered_to = "primary" if taken == 0 else "failover"
        log.info("webhook delivered", delivered_to=delivered_to, **fields)
        return
    errors = [r.error for r in results if r.error]
    if verdict is Verdict.RETRY:
        retry_at = str(next_attempt_at)
        log.info("webhook will be retried", errors=errors, next_attempt_at=retry_at, **fields)
    else:
        log.warning("webhook failed", errors=errors, **fields)


def _summary(results: Sequence[AttemptResult]) -> str | None:
    errors = [f"{r.url}: {r.error}" for r in results if r.error]
    return "; ".join(errors)[:MAX_ERROR_CHARS] if errors else None


def _metric_outcome(attempt: Verdict, round_: Verdict) -> str:
    if attempt is Verdict.DELIVERED:
        return "delivered"
    return "failed" if round_ is Verdict.REFUSED else "retry"
