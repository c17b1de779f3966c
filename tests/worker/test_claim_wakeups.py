"""A freed upload slot takes the next waiting recording at once, not at the next poll: the
claim of one queue (webhook events, with free slots and nothing due) must not stop the
other's (recordings, waiting for a slot). It did: 16 recordings/s at 8 slots and a 0.5 s poll
(bench/pipeline.py, docs/performance.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from callvault.worker.runner import BACKLOG_PER_SLOT, Worker
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    create_application,
    ingest,
    make_wav,
    recording_row,
    store_in_new_bucket,
    wait_until,
)

SLOTS = 2
# more than the worker takes over in memory (its slots and backlog), so that the rest wait
# unleased for claims
RECORDINGS = SLOTS * (1 + BACKLOG_PER_SLOT) + 4


async def test_freed_slots_take_the_backlog_without_waiting_for_the_poll(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await store_in_new_bucket(api, account.api_key, connection_id, seaweedfs)
    # a poll far beyond the test's patience: only the worker's wake-ups can move the backlog
    await start_worker(concurrency=SLOTS, poll_seconds=600)
    token = runtime.settings.ingest_token
    sent = await asyncio.gather(
        *(ingest(api, token, connection_id, make_wav(0.2)) for _ in range(RECORDINGS))
    )
    ids = [recording_id for recording_id, _ in sent]

    async def all_stored() -> bool:
        rows = [await recording_row(runtime, recording_id) for recording_id in ids]
        return all(row.status == "stored" for row in rows)

    await wait_until(all_stored, within=30, what=f"{RECORDINGS} recordings through {SLOTS} slots")
    await webhook_receiver.wait_for(RECORDINGS)
