"""The database as the queue: leases on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from callvault.accounts.service import NewAccount
from callvault.db import transaction, utcnow
from callvault.jobs import RECORDINGS
from callvault.recordings.models import Recording
from callvault.recordings.pipeline import UploadContext, process_recording
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookEvent
from callvault.worker import repository as jobs
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.worker.flow import (
    create_application,
    events_for,
    ingest,
    insert_recording,
    make_wav,
    recording_row,
    update_recording,
    wait_for_status,
    wait_until,
)


async def claim_as(runtime: Runtime, owner: str, limit: int) -> list[str]:
    now = utcnow()
    async with transaction(runtime.sessions) as session:
        return await jobs.claim(
            session,
            RECORDINGS,
            owner=owner,
            now=now,
            lease_until=now + timedelta(seconds=60),
            limit=limit,
            postgresql=runtime.engine.dialect.name == "postgresql",
        )


async def test_concurrent_claims_never_overlap(runtime: Runtime, account: NewAccount) -> None:
    ids = {await insert_recording(runtime, account.account_id, "1") for _ in range(24)}
    taken: dict[str, set[str]] = {"a": set(), "b": set(), "c": set()}

    async def claimer(owner: str) -> None:
        while True:
            got = set(await claim_as(runtime, owner, 3))
            taken[owner] |= got
            if not got:
                return
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(claimer(owner) for owner in taken))
        mine = {owner: claimed & ids for owner, claimed in taken.items()}
        assert mine["a"].isdisjoint(mine["b"]) and mine["a"].isdisjoint(mine["c"])
        assert mine["b"].isdisjoint(mine["c"])
        assert set().union(*mine.values()) == ids
        async with transaction(runtime.sessions) as session:
            owners = dict(
                (
                    await session.execute(
                        select(Recording.id, Recording.lease_owner).where(Recording.id.in_(ids))
                    )
                ).all()
            )
        for owner, claimed in mine.items():
            assert all(owners[i] == owner for i in claimed)
    finally:
        # other rows this test claimed belong to other tests: give them back
        async with transaction(runtime.sessions) as session:
            for owner, claimed in taken.items():
                await jobs.release(session, Recording, sorted(claimed - ids), owner=owner)
            await session.execute(
                update(Recording).where(Recording.id.in_(ids)).values(status="deleted")
            )


async def test_two_workers_process_each_recording_once(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    audio = make_wav(0.1)
    ids = [
        (await ingest(api, runtime.settings.ingest_token, connection_id, audio))[0]
        for _ in range(10)
    ]
    first, second = await start_worker(concurrency=2), await start_worker(concurrency=2)
    assert first.owner != second.owner
    deliveries = await webhook_receiver.wait_for(10)
    await asyncio.sleep(0.3)
    deliveries = webhook_receiver.received()
    assert sorted(d.payload["recording_id"] for d in deliveries) == sorted(ids)
    async with transaction(runtime.sessions) as session:
        count = await session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.recording_id.in_(ids))
        )
    assert count == 10


async def test_an_expired_lease_is_taken_over(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    # rows waiting for the worker (ingest stores default-store recordings at once: issue 14)
    expired = await insert_recording(runtime, account.account_id, connection_id)
    held = await insert_recording(runtime, account.account_id, connection_id)
    now = utcnow()
    await update_recording(
        runtime, expired, lease_owner="worker-dead", lease_until=now - timedelta(seconds=1)
    )
    await update_recording(
        runtime, held, lease_owner="worker-alive", lease_until=now + timedelta(seconds=30)
    )
    await start_worker()
    await wait_for_status(runtime, expired, "stored")
    await asyncio.sleep(0.4)
    row = await recording_row(runtime, held)
    assert row.status == "received" and row.lease_owner == "worker-alive"
    # the other worker dies: its lease runs out and this worker takes the row
    await update_recording(runtime, held, lease_until=utcnow() - timedelta(seconds=1))
    await wait_for_status(runtime, held, "stored")
    assert {d.payload["recording_id"] for d in await webhook_receiver.wait_for(2)} == {
        expired,
        held,
    }


async def test_a_worker_that_lost_its_lease_changes_nothing(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, webhook_receiver: WebhookReceiver
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    recording_id = await insert_recording(runtime, account.account_id, connection_id)
    # worker A holds the row, its lease expires, worker B takes it over
    await update_recording(
        runtime, recording_id, lease_owner="worker-b", lease_until=utcnow() + timedelta(seconds=60)
    )
    outcome = await process_recording(UploadContext(runtime, "worker-a", 60), recording_id)
    assert outcome.event_id is None
    row = await recording_row(runtime, recording_id)
    assert row.status == "received" and row.lease_owner == "worker-b"
    assert await events_for(runtime, recording_id) == []
    await update_recording(runtime, recording_id, status="deleted")


async def test_stop_releases_the_jobs_it_holds(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.stall(2.0, times=1)
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), timeout_secs=5
    )
    worker = await start_worker(drain_seconds=0.2)
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.1))

    async def leased_event() -> bool:
        events = await events_for(runtime, recording_id)
        return bool(events) and events[0].lease_owner == worker.owner

    await wait_until(leased_event)
    await worker.stop()
    [event] = await events_for(runtime, recording_id)
    assert event.status == "pending" and event.lease_owner is None and event.lease_until is None
    # another worker takes it at once, not after the lease would have expired
    await start_worker()

    async def delivered() -> bool:
        return (await events_for(runtime, recording_id))[0].status == "delivered"

    await wait_until(delivered, within=5)
    [event] = await events_for(runtime, recording_id)
    assert event.attempts == 1  # the interrupted round was never completed, so not counted


async def test_the_heartbeat_keeps_a_long_job_leased(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    # a delivery that outlasts the lease three times over: without renewals the second worker
    # would take the event over and send it a second time
    webhook_receiver.stall(2.4, times=1)
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), timeout_secs=5
    )
    first = await start_worker(lease_seconds=0.9)
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.1))

    async def leased() -> bool:
        events = await events_for(runtime, recording_id)
        return bool(events) and events[0].lease_owner == first.owner

    await wait_until(leased)
    await start_worker(lease_seconds=0.9)

    async def delivered() -> bool:
        return (await events_for(runtime, recording_id))[0].status == "delivered"

    await wait_until(delivered, within=5)
    await asyncio.sleep(0.3)
    assert len(webhook_receiver.received()) == 1
    assert (await events_for(runtime, recording_id))[0].attempts == 1


async def test_a_job_claimed_again_while_it_runs_here_is_not_run_twice(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    """A round in flight whose lease lapsed (the database away: the heartbeat could not renew
    it): the worker's own poll leases it to it again, and does not start a second round."""
    webhook_receiver.stall(1.5, times=1)
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), timeout_secs=5
    )
    worker = await start_worker(lease_seconds=60.0)
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.1))
    await webhook_receiver.wait_for(1)  # the round is in flight, held by the receiver
    [event] = await events_for(runtime, recording_id)
    assert event.lease_owner == worker.owner
    lapsed = utcnow() - timedelta(seconds=1)
    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(WebhookEvent).where(WebhookEvent.id == event.id).values(lease_until=lapsed)
        )

    async def leased_again() -> bool:
        [again] = await events_for(runtime, recording_id)
        return again.lease_until is not None and again.lease_until > utcnow()

    await wait_until(leased_again)

    async def delivered() -> bool:
        return (await events_for(runtime, recording_id))[0].status == "delivered"

    await wait_until(delivered, within=10)
    assert len(webhook_receiver.received()) == 1
    assert (await events_for(runtime, recording_id))[0].attempts == 1
