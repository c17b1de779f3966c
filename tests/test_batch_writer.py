"""Deferred units of the group commit: they ride along with the next batch, or commit alone
after a short wait, and their failure fails no one else."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.orm import Session

from callvault.batch_writer import JOIN_AT_MOST, BatchWriter
from callvault.runtime import Runtime
from tests.batching import HeldUnit


def _writer(runtime: Runtime, defer_secs: float) -> BatchWriter:
    return BatchWriter(runtime.batch_writer.writes, defer_secs=defer_secs)


async def test_a_deferred_unit_rides_along_with_the_next_commit(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)
    ran: list[str] = []

    def deferred(session: Session) -> None:
        session.execute(text("SELECT 1"))
        ran.append("deferred")

    def urgent(session: Session) -> str:
        ran.append("urgent")
        return "done"

    writer.defer(deferred)
    assert writer.deferred == 1 and ran == []
    assert await writer.run(urgent) == "done"
    assert sorted(ran) == ["deferred", "urgent"]
    assert (writer.commits, writer.units, writer.deferred) == (1, 2, 0)


async def test_a_lone_deferred_unit_commits_after_its_wait(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=0.05)
    ran = asyncio.Event()

    def deferred(session: Session) -> None:
        ran.set()

    writer.defer(deferred)
    await asyncio.wait_for(ran.wait(), timeout=5)
    assert writer.deferred == 0


async def test_flush_commits_what_is_deferred(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)
    ran: list[int] = []

    def deferred(session: Session) -> None:
        ran.append(1)

    writer.defer(deferred)
    writer.defer(deferred)
    await writer.flush()
    assert ran == [1, 1] and writer.commits == 1 and writer.deferred == 0
    await writer.flush()  # nothing deferred: no commit
    assert writer.commits == 1


async def test_a_failing_deferred_unit_fails_no_caller(runtime: Runtime) -> None:
    writer = _writer(runtime, defer_secs=60.0)

    def broken(session: Session) -> None:
        raise RuntimeError("a bug")

    def urgent(session: Session) -> int:
        return 7

    writer.defer(broken)
    assert await writer.run(urgent) == 7
    assert writer.split_batches == 1 and writer.deferred == 0


def _recorded(ran: list[str], name: str, session: Session) -> str:
    session.execute(text("SELECT 1"))
    ran.append(name)
    return name


async def test_an_express_unit_joins_the_batch_under_way(runtime: Runtime) -> None:
    """A webhook round's record queued while a batch runs its units: written in that batch,
    before its commit (one commit for both), not in a batch of its own after it."""
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    held = HeldUnit()
    slow = asyncio.create_task(writer.run(held))
    await held.running()
    ran: list[str] = []
    record = asyncio.create_task(
        writer.run(lambda session: _recorded(ran, "record", session), express=True)
    )
    await asyncio.sleep(0)  # queued
    held.release()
    assert await asyncio.gather(slow, record) == ["held", "record"]
    assert (writer.commits, writer.units, writer.express_batches) == (1, 2, 0)


async def test_an_express_unit_does_not_join_a_large_batch(runtime: Runtime) -> None:
    """A batch of more than JOIN_AT_MOST units: the rest of it may be a long wait, so the
    record goes to the express writer at once (PostgreSQL) and commits while the batch is
    still open; SQLite's one writer takes it in the next batch."""
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    held = HeldUnit()
    ran: list[str] = []
    large = [
        asyncio.create_task(writer.run(partial(_recorded, ran, f"unit {i}")))
        for i in range(JOIN_AT_MOST)
    ]
    large.append(asyncio.create_task(writer.run(held)))
    await held.running()
    record = asyncio.create_task(writer.run(partial(_recorded, ran, "record"), express=True))
    if runtime.engine.dialect.name == "postgresql":
        assert await asyncio.wait_for(record, timeout=30) == "record"
        assert not held.released and writer.express_batches == 1
    held.release()
    await asyncio.gather(*large, record)
    expected = (2, 1) if runtime.engine.dialect.name == "postgresql" else (2, 0)
    assert (writer.commits, writer.express_batches) == expected


async def test_an_express_unit_goes_at_once_when_no_batch_runs(runtime: Runtime) -> None:
    """No batch under way (PostgreSQL): the express writer writes the record at once, on its
    own sessions (in autocommit: one round trip); SQLite's one writer takes it."""
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    ran: list[str] = []
    assert await writer.run(partial(_recorded, ran, "record"), express=True) == "record"
    on_postgresql = runtime.engine.dialect.name == "postgresql"
    assert writer.express_batches == (1 if on_postgresql else 0)
    assert writer.commits == 1


async def test_a_late_joiner_that_fails_fails_alone(runtime: Runtime) -> None:
    """An express unit that joined the batch under way and fails: the batch is split, the
    others are committed, the failing one gets its own error."""
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    held = HeldUnit()
    slow = asyncio.create_task(writer.run(held))
    await held.running()

    def poisoned(session: Session) -> None:
        raise ValueError("poisoned record")

    bad = asyncio.create_task(writer.run(poisoned, express=True))
    await asyncio.sleep(0)  # queued while the batch runs: it joins
    held.release()
    assert await slow == "held"
    with pytest.raises(ValueError, match="poisoned record"):
        await bad
    assert (writer.split_batches, writer.commits, writer.express_batches) == (1, 1, 0)


async def test_an_express_unit_carries_what_is_deferred_when_no_batch_runs(
    runtime: Runtime,
) -> None:
    """The main writer idle with a deferred unit waiting: the record starts a batch that
    carries it (one commit for both, not the express writer's and a lone deferred one)."""
    writer = BatchWriter(
        runtime.batch_writer.writes,
        defer_secs=60.0,
        express_writes=runtime.batch_writer.express_writes,
    )
    ran: list[str] = []
    writer.defer(partial(_recorded, ran, "deferred"))
    assert await writer.run(partial(_recorded, ran, "record"), express=True) == "record"
    assert sorted(ran) == ["deferred", "record"]
    assert (writer.commits, writer.units, writer.express_batches, writer.deferred) == (1, 2, 0, 0)


async def test_express_units_ready_together_are_one_express_batch(runtime: Runtime) -> None:
    """Records that arrive while the express writer writes go together in its next batch."""
    if runtime.engine.dialect.name != "postgresql":
        return
    writer = BatchWriter(
        runtime.batch_writer.writes, express_writes=runtime.batch_writer.express_writes
    )
    held = HeldUnit()
    first = asyncio.create_task(writer.run(held, express=True))
    await held.running()
    ran: list[str] = []
    later = [
        asyncio.create_task(writer.run(partial(_recorded, ran, name), express=True))
        for name in ("a", "b", "c")
    ]
    await asyncio.sleep(0)  # each takes its first step: queued
    assert writer.waiting == 3
    held.release()
    assert await asyncio.gather(first, *later) == ["held", "a", "b", "c"]
    assert (writer.express_batches, writer.commits, writer.units) == (2, 2, 4)


async def test_express_units_go_first_in_the_next_batch_without_an_express_writer(
    runtime: Runtime,
) -> None:
    """SQLite's one writer: the express unit goes with the next batch, ahead of what queued
    before it."""
    writer = BatchWriter(runtime.batch_writer.writes, max_batch=1)
    held = HeldUnit()
    slow = asyncio.create_task(writer.run(held))
    await held.running()
    ran: list[str] = []
    plain = asyncio.create_task(writer.run(lambda session: _recorded(ran, "plain", session)))
    record = asyncio.create_task(
        writer.run(lambda session: _recorded(ran, "record", session), express=True)
    )
    await asyncio.sleep(0)  # both tasks take their first step: queued, in this order
    assert writer.waiting == 2
    held.release()
    assert await asyncio.gather(slow, plain, record) == ["held", "plain", "record"]
    assert ran == ["record", "plain"]
    assert (writer.commits, writer.express_batches) == (3, 0)


async def test_commits_and_their_units_are_counted_on_metrics(runtime: Runtime) -> None:
    """`callvault_group_commits_total` and `..._units_total` move with the writer: units per
    commit is the average batch (docs/deploy.md)."""
    await runtime.batch_writer.flush()  # no deferred write of an earlier test commits meanwhile
    writer = _writer(runtime, defer_secs=60.0)
    commits = REGISTRY.get_sample_value("callvault_group_commits_total") or 0.0
    units = REGISTRY.get_sample_value("callvault_group_commit_units_total") or 0.0
    writer.defer(lambda session: None)
    writer.defer(lambda session: None)
    await writer.run(lambda session: None)  # one batch of three
    await writer.run(lambda session: None)
    assert REGISTRY.get_sample_value("callvault_group_commits_total") == commits + 2
    assert REGISTRY.get_sample_value("callvault_group_commit_units_total") == units + 4


async def test_a_caller_cancelled_after_its_unit_was_taken_waits_for_its_outcome(
    runtime: Runtime,
) -> None:
    """Once its unit is in a batch, a cancelled caller raises only when the batch's outcome is
    settled: it can then tell whether its unit ran (ingest keeps the object of a row that may
    be committed)."""
    writer = BatchWriter(runtime.batch_writer.writes)
    held = HeldUnit()
    ran: list[str] = []
    slow = asyncio.create_task(writer.run(held))
    mine = asyncio.create_task(writer.run(partial(_recorded, ran, "mine")))
    await held.running()  # both were queued before the writer's first turn: one batch
    mine.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not mine.done()  # the cancellation waits for the batch
    held.release()
    with pytest.raises(asyncio.CancelledError):
        await mine
    assert await slow == "held"
    assert ran == ["mine"] and (writer.commits, writer.units) == (1, 2)
