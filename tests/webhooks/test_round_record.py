"""A webhook round's durable record written together with the other rounds of its batch
(issue 24): one INSERT of every attempt and one UPDATE per set of columns (on SQLite after one
SELECT of the leases), each round still told whether its lease held."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import select

from callvault.accounts.service import NewAccount
from callvault.batch_writer import BatchWriter
from callvault.db import transaction, utcnow
from callvault.runtime import Runtime
from callvault.webhooks.attempt import AttemptResult, Verdict
from callvault.webhooks.delivery import RoundRecord
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent
from tests.worker.test_statement_budget import SqlCounter

# the shared database outlives this file: a worker of a later test must not claim these events
NOT_DUE = timedelta(days=1)


def _leased_event(account_id: str, owner: str) -> WebhookEvent:
    now = utcnow()
    return WebhookEvent(
        id=str(uuid.uuid4()),
        account_id=account_id,
        application_id="1",
        event_type="call.recording.saved",
        api_version="2",
        payload={},
        status=EventStatus.PENDING,
        attempts=0,
        next_attempt_at=now + NOT_DUE,
        lease_owner=owner,
        lease_until=now + timedelta(seconds=60),
    )


def _round(event: WebhookEvent, owner: str, delivered: bool) -> RoundRecord:
    now = utcnow()
    result = AttemptResult(
        url="https://hooks.example.com/in",
        verdict=Verdict.DELIVERED if delivered else Verdict.RETRY,
        status_code=200 if delivered else 503,
        latency_ms=1.0,
        error=None if delivered else "HTTP 503",
        finished_at=now,
    )
    if delivered:
        values = {
            "attempts": 1,
            "last_error": None,
            "status": EventStatus.DELIVERED,
            "delivered_at": now,
            "next_attempt_at": None,
        }
    else:
        values = {"attempts": 1, "last_error": "HTTP 503", "next_attempt_at": now + NOT_DUE}
    return RoundRecord(event.id, owner, 1, [result], now, values)


async def test_rounds_written_together_each_learn_whether_their_lease_held(
    runtime: Runtime, account: NewAccount
) -> None:
    events = [_leased_event(account.account_id, "me") for _ in range(4)]
    events.append(_leased_event(account.account_id, "someone else"))  # taken over meanwhile
    async with transaction(runtime.sessions) as session:
        session.add_all(events)
    rounds = [_round(event, "me", delivered=i % 2 == 0) for i, event in enumerate(events)]
    with SqlCounter().counting(*runtime.writing_engines) as counter:
        async with transaction(runtime.sessions) as session:
            kept = await session.run_sync(RoundRecord.write_together, rounds)

    assert kept == [True, True, True, True, False]
    # PostgreSQL: one statement (the attempts' INSERT inside the events' UPDATE); SQLite, whose
    # UPDATE learns only a total count: one SELECT of the leases held, one INSERT, one UPDATE
    # per set of columns (delivered / to be retried)
    expected = 1 if runtime.engine.dialect.name == "postgresql" else 4
    assert len(counter.statements) == expected, counter.statements
    ids = [event.id for event in events]
    async with runtime.sessions() as session:
        found = await session.scalars(select(WebhookEvent).where(WebhookEvent.id.in_(ids)))
        stored = {e.id: e for e in found.all()}
        attempts = (
            await session.scalars(select(WebhookAttempt).where(WebhookAttempt.event_id.in_(ids)))
        ).all()
    assert sorted(a.event_id for a in attempts) == sorted(ids)
    sent = {r.event_id: r.results[0] for r in rounds}
    for a in attempts:  # every column as the round had it
        result = sent[a.event_id]
        assert (a.attempt, a.url, a.status_code, a.error) == (
            1,
            result.url,
            result.status_code,
            result.error,
        )
        assert (a.latency_ms, a.finished_at) == (result.latency_ms, result.finished_at)
    for i, event in enumerate(events[:4]):
        row = stored[event.id]
        assert (row.attempts, row.lease_owner, row.lease_until) == (1, None, None)
        if i % 2 == 0:
            assert (row.status, row.next_attempt_at, row.last_error) == ("delivered", None, None)
            assert row.delivered_at == rounds[i].values["delivered_at"]
        else:
            assert (row.status, row.last_error) == ("pending", "HTTP 503")
            assert row.next_attempt_at == rounds[i].values["next_attempt_at"]
            assert row.delivered_at is None
    taken = stored[events[4].id]
    assert (taken.attempts, taken.lease_owner) == (0, "someone else")


async def test_a_batch_of_rounds_is_written_together_by_the_writer(
    runtime: Runtime, account: NewAccount
) -> None:
    """Through the group commit as the runtime has it (PostgreSQL: the express writer, in
    autocommit): rounds queued together are one call of `write_together` (one statement for
    four rounds, four on SQLite) and one commit."""
    events = [_leased_event(account.account_id, "me") for _ in range(4)]
    async with transaction(runtime.sessions) as session:
        session.add_all(events)
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    rounds = [_round(event, "me", delivered=i % 2 == 0) for i, event in enumerate(events)]
    with SqlCounter().counting(*runtime.writing_engines) as counter:
        kept = await asyncio.gather(*(writer.run(r, express=True) for r in rounds))
    assert kept == [True] * 4
    # all four queued before the writer's first turn: one batch, one commit
    assert (writer.commits, writer.units) == (1, 4)
    expected = 1 if runtime.engine.dialect.name == "postgresql" else 4
    assert len(counter.statements) == expected, counter.statements
    assert counter.fsynced_commits == 1


async def test_two_rounds_of_one_event_in_a_batch_are_written_in_turn(
    runtime: Runtime, account: NewAccount
) -> None:
    """An event twice in one batch (its one UPDATE could change the row once): each round is
    written in turn; the first gives the lease back, so the second learns it lost it. Both
    attempts are kept: both were sent."""
    event = _leased_event(account.account_id, "me")
    async with transaction(runtime.sessions) as session:
        session.add(event)
    rounds = [_round(event, "me", delivered=False), _round(event, "me", delivered=True)]
    async with transaction(runtime.sessions) as session:
        kept = await session.run_sync(RoundRecord.write_together, rounds)
    assert kept == [True, False]
    async with runtime.sessions() as session:
        stored = await session.get(WebhookEvent, event.id)
        attempts = (
            await session.scalars(select(WebhookAttempt).where(WebhookAttempt.event_id == event.id))
        ).all()
    assert stored is not None and (stored.status, stored.lease_owner) == ("pending", None)
    assert sorted(a.status_code for a in attempts) == [200, 503]
