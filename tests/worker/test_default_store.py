"""Recordings of connections without custom storage: stored where they are, webhook sent."""

from __future__ import annotations

import hashlib

import httpx

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from tests.receiver import WebhookReceiver
from tests.worker.flow import (
    attempts_for,
    create_application,
    events_for,
    ingest,
    make_wav,
    wait_for_status,
    wait_until,
)


async def test_default_store_recording_is_stored_and_announced(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker,
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    audio = make_wav(0.3)
    await start_worker()
    recording_id, metadata = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    [delivery] = await webhook_receiver.wait_for(1)
    webhook_receiver.verify(delivery, account.webhook_public_key)
    body = delivery.json()
    assert body["data"]["event_type"] == "call.recording.saved"
    assert body["meta"] == {"attempt": 1, "delivered_to": webhook_receiver.url()}
    payload = body["data"]["payload"]
    assert payload["recording_id"] == recording_id
    assert payload["call_leg_id"] == metadata["call_leg_id"]
    link = payload["recording_urls"]["wav"]
    row = await wait_for_status(runtime, recording_id, "stored")
    assert row.default_store_key is not None and row.backend is None
    [event] = await events_for(runtime, recording_id)
    assert event.id == body["data"]["id"]
    assert link.startswith(runtime.settings.public_url)
    response = await api.get(link.removeprefix(runtime.settings.public_url))
    assert response.status_code == 200, response.text
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(audio).hexdigest()

    async def delivered() -> bool:
        return (await events_for(runtime, recording_id))[0].status == "delivered"

    await wait_until(delivered)
    [attempt] = await attempts_for(runtime, event.id)
    assert attempt.status_code == 200 and attempt.attempt == 1 and attempt.error is None
