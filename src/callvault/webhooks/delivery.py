"""Delivering one webhook event: one round per claim — the primary URL, then at once the
failover URL if the primary failed — every request recorded as a WebhookAttempt, the event's
next state written with the lease given back.

- The request and what its outcome is called: webhooks/attempt.py; the next state:
  webhooks/outcome.py; the body and its signature: webhooks/payloads.py, webhooks/signing.py.
- `meta.attempt` is the round number: the primary and the failover request of one round carry
  the same number and differ in `meta.delivered_to`. The event id never changes.
- An inactive or deleted application: the event is marked failed without a request.
- A sent round's outcome is written even while the database is away for a while (see
  `_record_round`): giving it up would send it again, a duplicate at the receiver.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from callvault.accounts.models import Account
from callvault.accounts.service import signing_key
from callvault.applications.models import Application
from callvault.db import database_unavailable, transaction, utcnow
from callvault.metrics import JOB_CRASHES, WEBHOOK_ATTEMPTS
from callvault.runtime import Runtime
from callvault.webhooks import payloads, repository
from callvault.webhooks.attempt import AttemptResult, Sender, Verdict, timeout_for
from callvault.webhooks.outcome import NextState, next_state, not_sent, round_error, round_verdict
from callvault.webhooks.schedule import DEFAULT_SCHEDULE, schedule_from_env

log = structlog.get_logger("callvault.webhooks")

# how long a sent round's outcome is kept trying to be written while the database is away,
# and how often
RECORD_PATIENCE_SECS = 120.0
RECORD_RETRY_SECS = 0.4

# the recordings domain's answer to "a fresh link to this recording, if it needs one" (a
# recording in the default store: its links live 600 s); wired by the entry point, since this
# domain does not import recordings
FreshLink = Callable[[repository.DeliveredRecording], Awaitable[str | None]]


class Deliverer:
    """Sends events; one per worker, sharing one HTTP client (connection reuse)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        fresh_link: FreshLink,
        rng: random.Random | None = None,
        schedule: tuple[float, ...] | None = None,
    ) -> None:
        self.runtime = runtime
        self.fresh_link = fresh_link
        self.rng = rng or random.Random()  # jitter, not a secret
        # CALLVAULT_WEBHOOK_SCHEDULE is this domain's setting: parsed here, not in config.py
        self.schedule = schedule or schedule_from_env(runtime.settings.environ) or DEFAULT_SCHEDULE
        self.sender = Sender(allow_private_networks=runtime.settings.allow_private_networks)
        self._keys: dict[str, Ed25519PrivateKey] = {}

    async def aclose(self) -> None:
        await self.sender.aclose()

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

    async def deliver_known(self, context: repository.DeliveryContext, owner: str) -> Verdict:
        """One round of an event leased to `owner` whose context is in memory already (made
        by this process: no read)."""
        # every log line of this round names the event and what it is about
        with structlog.contextvars.bound_contextvars(
            event_id=context.event.id,
            recording_id=context.event.recording_id,
            connection_id=context.event.application_id,
        ):
            try:
                return await self._deliver_round(context, owner)
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
        attempt = context.event.attempts + 1
        state = self._next_state(
            Verdict.RETRY, attempt, f"internal error: {type(exc).__name__}", utcnow()
        )
        async with transaction(self.runtime.sessions) as session:
            await session.run_sync(repository.finish_round, context.event.id, owner, state.values)
        JOB_CRASHES.labels(job="webhook").inc()
        gave_up = state.verdict is Verdict.REFUSED
        log.error(
            "webhook round crashed", error_type=type(exc).__name__, attempt=attempt, gave_up=gave_up
        )
        return state.verdict

    def _next_state(
        self, verdict: Verdict, attempt: int, error: str | None, now: datetime
    ) -> NextState:
        return next_state(
            verdict, attempt=attempt, error=error, now=now, rng=self.rng, schedule=self.schedule
        )

    async def _deliver_round(self, context: repository.DeliveryContext, owner: str) -> Verdict:
        event, application = context.event, context.application
        if application is None or not application.active:
            why = "application deleted" if application is None else "application is inactive"
            async with transaction(self.runtime.sessions) as session:
                await session.run_sync(
                    repository.finish_round, event.id, owner, not_sent(why).values
                )
            log.info("webhook not sent", event_id=event.id, why=why)
            return Verdict.REFUSED

        attempt = event.attempts + 1
        results = await self._send_round(context, application, attempt)
        now = utcnow()
        state = self._next_state(round_verdict(results), attempt, round_error(results), now)
        kept = await self._record_round(event.id, owner, attempt, results, now, state)
        if not kept:
            log.warning("webhook lease lost during delivery", event_id=event.id)
        for r in results:
            WEBHOOK_ATTEMPTS.labels(outcome=_metric_outcome(r.verdict, state.verdict)).inc()
        _log_round(event.event_type, attempt, results, state)
        return state.verdict

    async def _send_round(
        self, context: repository.DeliveryContext, application: Application, attempt: int
    ) -> list[AttemptResult]:
        """The primary URL, then the failover URL if the primary did not take it."""
        event = context.event
        payload = await self._payload(context)
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
            result = await self.sender.post(url, body, key, timeout)
            results.append(result)
            if result.verdict is Verdict.DELIVERED:
                break
        return results

    async def _payload(self, context: repository.DeliveryContext) -> dict[str, Any]:
        """The stored payload; a saved recording in the default store gets a fresh link
        (those live 600 s: every attempt makes a new one)."""
        payload: dict[str, Any] = context.event.payload
        recording = context.recording
        if context.event.event_type == payloads.SAVED and recording is not None:
            link = await self.fresh_link(recording)
            if link:
                payload = payloads.with_recording_url(payload, recording.format, link)
        return payload

    async def _record_round(
        self,
        event_id: str,
        owner: str,
        attempt: int,
        results: Sequence[AttemptResult],
        now: datetime,
        state: NextState,
    ) -> bool:
        """Write the round's outcome. The requests were sent: if the database is away right
        now, the write is tried again (at once, then every RECORD_RETRY_SECS, for up to
        RECORD_PATIENCE_SECS) instead of giving the round up, which would send it again once
        its lease expired (a duplicate at the receiver).
        - At once: the express writer's kept connection, dead since an outage, fails one
          batch; the next try connects anew.
        - Then often: an outage can outlast a lease, and once the database is back this
          record must land before a claim (every 0.5 s) takes the lapsed lease."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RECORD_PATIENCE_SECS
        pause = 0.0
        write = RoundRecord(event_id, owner, attempt, results, now, state.values)
        while True:
            try:
                # group commit (issue 24): the rounds whose answers are in share one commit,
                # taken at once (no timer); express: a record does not wait behind other
                # writes (the 2xx -> record window, docs/performance.md)
                return await self.runtime.batch_writer.run(write, express=True)
            except Exception as exc:
                if not database_unavailable(exc) or loop.time() + pause > give_up_at:
                    raise
                log.warning("database unavailable: round not recorded yet", retry_in=pause)
                await asyncio.sleep(pause)
                pause = RECORD_RETRY_SECS


@dataclass(frozen=True)
class RoundRecord:
    """A round's durable record (its attempts, the event's next state, the lease given back):
    a group-commit unit, written together with the other rounds of its batch
    (batch_writer.Joinable): on PostgreSQL one statement for all of them, so that the express
    writer can run it in autocommit, one round trip; elsewhere one INSERT of every attempt,
    then the events' UPDATEs."""

    event_id: str
    owner: str
    attempt: int
    results: Sequence[AttemptResult]
    now: datetime
    values: dict[str, Any]

    def __call__(self, session: Session) -> bool:
        return self.write_together(session, [self])[0]

    @classmethod
    def write_together(cls, session: Session, rounds: list[RoundRecord]) -> list[bool]:
        """False for a round whose lease was lost. Rows are built here, fresh each try: a
        rolled-back session leaves them unusable."""
        if len({r.event_id for r in rounds}) < len(rounds):
            # an event twice (rare; an UPDATE changes a row once): one round at a time, each
            # one statement on PostgreSQL, atomic alone
            return [cls.write_together(session, [r])[0] for r in rounds]
        held, attempts = _rows(rounds)
        if repository.records_in_one_statement(session):
            return repository.record_rounds(session, held, attempts)
        repository.add_attempts(session, attempts)
        return repository.finish_rounds(session, held)


def _rows(rounds: list[RoundRecord]) -> tuple[list[repository.Round], list[dict[str, Any]]]:
    """The rounds' (event id, owner, next state) and their attempts' rows."""
    held = [(r.event_id, r.owner, r.values) for r in rounds]
    attempts = [_attempt_row(r.event_id, r.attempt, a, r.now) for r in rounds for a in r.results]
    return held, attempts


def _attempt_row(
    event_id: str, attempt: int, result: AttemptResult, now: datetime
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "attempt": attempt,
        "url": result.url,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "error": result.error,
        "created_at": now,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "request_headers": result.request_headers,
        "response_headers": result.response_headers,
        "response_body": result.response_body,
    }


def _log_round(
    event_type: str, attempt: int, results: Sequence[AttemptResult], state: NextState
) -> None:
    """One line per round. URLs stay out (a customer may put a token in one): which URL took
    it is `delivered_to` = primary or failover."""
    fields: dict[str, Any] = {
        "event_type": event_type,
        "attempt": attempt,
        "status_codes": [r.status_code for r in results],
        "latency_ms": [r.latency_ms for r in results],
    }
    if state.verdict is Verdict.DELIVERED:
        taken = next(i for i, r in enumerate(results) if r.verdict is Verdict.DELIVERED)
        delivered_to = "primary" if taken == 0 else "failover"
        log.info("webhook delivered", delivered_to=delivered_to, **fields)
        return
    errors = [r.error for r in results if r.error]
    if state.verdict is Verdict.RETRY:
        retry_at = str(state.next_attempt_at)
        log.info("webhook will be retried", errors=errors, next_attempt_at=retry_at, **fields)
    else:
        log.warning("webhook failed", errors=errors, **fields)


def _metric_outcome(attempt: Verdict, round_: Verdict) -> str:
    if attempt is Verdict.DELIVERED:
        return "delivered"
    return "failed" if round_ is Verdict.REFUSED else "retry"
