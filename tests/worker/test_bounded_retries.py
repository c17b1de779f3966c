"""Every job ends: a crash in callvault's own code is counted as an attempt, retried on the
schedule and, after it, left in a visible failed state with its reason — never a loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import update

from callvault.accounts.models import Account
from callvault.accounts.service import NewAccount
from callvault.db import transaction
from callvault.jobs import make_worker
from callvault.metrics import JOB_CRASHES
from callvault.runtime import Runtime
from callvault.webhooks import payloads
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.worker.flow import (
    create_application,
    events_for,
    ingest,
    make_wav,
    recording_row,
    wait_until,
)

AUDIO = make_wav(0.2)
SCHEDULE = (0.1, 0.1)


async def test_a_webhook_whose_signing_key_cannot_be_opened_fails_after_its_schedule(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(Account)
            .where(Account.id == account.account_id)
            .values(webhook_private_key_sealed="v1:not-a-sealed-key")
        )
    crashes = JOB_CRASHES.labels(job="webhook")._value.get()
    await start_worker(webhook_schedule=SCHEDULE)
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)

    async def failed() -> bool:
        events = await events_for(runtime, recording_id)
        return len(events) == 1 and events[0].status == "failed"

    await wait_until(failed, within=20, what="the event failed for good")
    event = (await events_for(runtime, recording_id))[0]
    assert event.attempts == len(SCHEDULE) + 1  # every round counted, then it stopped
    assert event.last_error and event.last_error.startswith("internal error: ")
    assert event.lease_owner is None and event.next_attempt_at is None
    assert JOB_CRASHES.labels(job="webhook")._value.get() - crashes == len(SCHEDULE) + 1
    assert webhook_receiver.deliveries == []  # nothing unsigned ever left
    # the recording itself is fine: stored in the default store
    assert (await recording_row(runtime, recording_id)).status == "stored"


async def test_an_upload_job_that_crashes_fails_after_the_horizon(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the step after the upload (here: making the saved event) is retried on the
    upload backoff and ends `failed` with "Internal server error" once the horizon passed."""
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(payloads, "saved_payload", broken)
    settings = dataclasses.replace(
        runtime.settings, upload_give_up_secs=1.0, upload_backoff_cap_secs=0.2
    )
    short = Runtime.build(settings)
    worker = make_worker(short, poll_seconds=0.1, webhook_schedule=SCHEDULE)
    await worker.start()
    try:
        recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)

        async def failed() -> bool:
            return (await recording_row(runtime, recording_id)).status == "failed"

        await wait_until(failed, within=20, what="the recording failed for good")
        row = await recording_row(runtime, recording_id)
        assert row.attempts >= 2 and row.lease_owner is None and row.next_attempt_at is None
        assert row.error_reason == "Internal server error"
        assert row.error_detail and "internal error: KeyError" in row.error_detail
        assert row.default_store_key is not None  # kept in the default store: nothing lost
        # the failure is told: a call.recording.error webhook
        deliveries = await webhook_receiver.wait_for(1)
        assert deliveries[0].json()["data"]["event_type"] == "call.recording.error"
    finally:
        await worker.stop()
        await short.close()
