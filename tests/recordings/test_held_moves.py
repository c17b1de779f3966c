"""The worker's outcomes written together (issue 24): the moves of held recordings in one
batch are one SELECT of who holds them, one UPDATE per kind of move and one INSERT of every
event their transitions emit, and each move still learns whether its lease held."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from callvault.accounts.service import NewAccount
from callvault.applications.models import Application
from callvault.batch_writer import BatchWriter
from callvault.db import transaction, utcnow
from callvault.recordings import transitions
from callvault.recordings.lifecycle import Event, change
from callvault.recordings.models import Recording
from callvault.recordings.pipeline import HeldMove
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookEvent
from tests.operations.test_backlog import recording_row
from tests.worker.test_statement_budget import SqlCounter


async def _held_recordings(
    runtime: Runtime, account: NewAccount, connection_id: str, owners: list[str]
) -> list[Recording]:
    rows = [recording_row(account.account_id, "received", timedelta()) for _ in owners]
    for row, owner in zip(rows, owners, strict=True):
        row.connection_id = connection_id
        row.lease_owner, row.lease_until = owner, utcnow() + timedelta(seconds=60)
    async with transaction(runtime.sessions) as session:
        session.add_all(rows)
    return rows


def _moves(rows: list[Recording], application: Application) -> list[HeldMove]:
    """Stored in the default store for the even ones, failed for the odd ones."""
    until = utcnow() + timedelta(seconds=60)
    stored = change("received", Event.STORED_DEFAULT)
    failed = transitions.failed("Internal server error", "it broke", None, 1)
    return [
        HeldMove(row, "me", failed if i % 2 else stored, until, "https://link", application)
        for i, row in enumerate(rows)
    ]


async def test_moves_written_together_each_learn_whether_their_lease_held(
    runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    rows = await _held_recordings(runtime, account, connection_id, ["me"] * 4 + ["someone else"])
    async with runtime.sessions() as session:
        application = await session.get(Application, connection_id)
    assert application is not None
    moves = _moves(rows, application)
    with SqlCounter().counting(*runtime.writing_engines) as counter:
        async with transaction(runtime.sessions) as session:
            made = await session.run_sync(HeldMove.write_together, moves)

    assert made[4] is False  # taken over meanwhile: neither its row nor an event is written
    events = [event for event in made[:4] if isinstance(event, WebhookEvent)]
    saved_then_error = ["call.recording.saved", "call.recording.error"]
    assert [event.event_type for event in events] == saved_then_error * 2
    # one SELECT of the holders, one UPDATE per kind of move, one INSERT of the events
    verbs = [statement.split()[0] for statement in counter.statements]
    assert verbs == ["SELECT", "UPDATE", "UPDATE", "INSERT"], counter.statements
    ids = [row.id for row in rows]
    async with runtime.sessions() as session:
        found = await session.scalars(select(Recording).where(Recording.id.in_(ids)))
        stored = {row.id: row for row in found.all()}
        leased = await session.scalars(
            select(WebhookEvent.lease_owner).where(WebhookEvent.recording_id.in_(ids))
        )
        event_owners = leased.all()
    assert [stored[i].status for i in ids] == ["stored", "failed", "stored", "failed", "received"]
    assert [stored[i].lease_owner for i in ids] == [None, None, None, None, "someone else"]
    assert stored[ids[1]].error_detail == "it broke"
    assert event_owners == ["me"] * 4  # each event leased to the worker that sends it


async def test_moves_queued_together_are_one_commit(
    runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    rows = await _held_recordings(runtime, account, connection_id, ["me"] * 4)
    async with runtime.sessions() as session:
        application = await session.get(Application, connection_id)
    assert application is not None
    writer = BatchWriter(runtime.batch_writer.writes)
    made = await asyncio.gather(*(writer.run(move) for move in _moves(rows, application)))
    assert all(isinstance(event, WebhookEvent) for event in made)
    assert (writer.commits, writer.units) == (1, 4)
