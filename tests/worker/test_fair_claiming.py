"""Claiming is fair across connections: one customer's backlog cannot hold the others back."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import distinct, func, select, update

from callvault.accounts.service import NewAccount
from callvault.db import transaction, utcnow
from callvault.jobs import RECORDINGS
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.worker import repository as jobs
from tests.worker.flow import insert_recording


async def test_every_connection_gets_a_turn_before_anyone_gets_a_second(
    runtime: Runtime, account: NewAccount
) -> None:
    now = utcnow()
    busy, quiet_a, quiet_b = (f"fair-{uuid.uuid4().hex[:8]}" for _ in range(3))
    backlog = [
        await insert_recording(
            runtime, account.account_id, busy, next_attempt_at=now - timedelta(minutes=30 - i)
        )
        for i in range(12)
    ]
    later = [
        await insert_recording(
            runtime, account.account_id, connection, next_attempt_at=now - timedelta(seconds=5)
        )
        for connection in (quiet_a, quiet_b)
    ]
    mine = set(backlog) | set(later)
    owner = f"worker-{uuid.uuid4()}"
    async with runtime.sessions() as session:
        # other tests' due rows compete too: one more slot for each of their connections
        others = await session.scalar(
            select(func.count(distinct(Recording.connection_id))).where(
                Recording.status == "received",
                Recording.next_attempt_at <= now,
                Recording.connection_id.not_in([busy, quiet_a, quiet_b]),
            )
        )
    async with transaction(runtime.sessions) as session:
        taken = await jobs.claim(
            session,
            RECORDINGS,
            owner=owner,
            now=now,
            lease_until=now + timedelta(seconds=60),
            limit=4 + int(others or 0),
            postgresql=runtime.engine.dialect.name == "postgresql",
        )
    # rows of other tests may be due too: only this test's rows are looked at
    ours = [job for job in taken if job in mine]
    assert set(later) <= set(ours), "the quiet connections waited behind the backlog"
    assert backlog[0] in ours  # the busy connection's oldest still gets its turn
    # release them so no other test's worker picks rows without bytes
    async with transaction(runtime.sessions) as session:
        await jobs.release(session, Recording, taken, owner=owner)
        await session.execute(
            update(Recording).where(Recording.id.in_(list(mine))).values(status="deleted")
        )
