"""One customer's slow receiver cannot stall another customer's recordings: uploads and
deliveries have their own slots, and the first webhook of an upload runs in a delivery slot
(waiting for one to free: the delivery slots bound the rounds in flight)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    create_application,
    ingest,
    make_wav,
    store_in_new_bucket,
    wait_for_status,
)

AUDIO = make_wav(0.2)
STALL = 6.0
HELD = 2.0  # long enough for every upload to hand its event over meanwhile


async def test_a_slow_receiver_does_not_hold_upload_slots(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    slow = await create_application(
        api, account.api_key, webhook_receiver.url("/slow"), timeout_secs=30
    )
    fast = await create_application(api, account.api_key, webhook_receiver.url("/fast"))
    webhook_receiver.stall(STALL, times=3, path="/slow")
    # one upload slot: before, it was held by each slow webhook for the whole stall
    await start_worker(concurrency=1, delivery_concurrency=4)
    await ingest_stored(api, runtime, slow, 3)
    started = time.monotonic()
    token = runtime.settings.ingest_token
    fast_ids = [(await ingest(api, token, fast, AUDIO))[0] for _ in range(3)]
    fast_deliveries = await webhook_receiver.wait_for(3, path="/fast", within=STALL)
    took = time.monotonic() - started
    assert {d.payload["recording_id"] for d in fast_deliveries} == set(fast_ids)
    # the slow receiver is still holding its three requests: the fast ones did not wait
    assert took < STALL - 1, took


async def test_an_uploads_webhook_waits_for_a_free_delivery_slot(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    seaweedfs: SeaweedFS,
) -> None:
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url("/held"), timeout_secs=30
    )
    await store_in_new_bucket(api, account.api_key, connection_id, seaweedfs)
    # each upload hands its event over while the first rounds are held: before, each was
    # sent at once, beyond the delivery slots
    webhook_receiver.stall(HELD, times=4, path="/held")
    await start_worker(concurrency=4, delivery_concurrency=2)
    ids = await ingest_stored(api, runtime, connection_id, 4)
    deliveries = await webhook_receiver.wait_for(4, path="/held", within=4 * HELD + 5)
    assert {d.payload["recording_id"] for d in deliveries} == set(ids)
    assert webhook_receiver.max_in_flight == 2


async def ingest_stored(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str, count: int
) -> list[str]:
    """`count` recordings ingested one after the other, each then awaited until stored."""
    token = runtime.settings.ingest_token
    ids = [(await ingest(api, token, connection_id, AUDIO))[0] for _ in range(count)]
    for recording_id in ids:
        await wait_for_status(runtime, recording_id, "stored", within=10)
    return ids
