"""The real webhook sender (worker + webhooks/delivery.py) checks addresses when it connects.

The application is created while private networks are allowed (as if its URL had resolved to a
public address when it was saved); the worker then runs with them refused, as production does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from callvault.jobs import make_worker
from callvault.runtime import Runtime
from callvault.webhooks.models import EventStatus, WebhookEvent
from tests.recordings.samples import make_wav
from tests.security.receiver import Receiver, Reply
from tests.worker.flow import attempts_for, create_application, events_for, ingest, wait_until

AUDIO = make_wav(0.2)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


async def run_until_settled(runtime: Runtime, recording_id: str) -> WebhookEvent:
    worker = make_worker(runtime, poll_seconds=0.05, webhook_schedule=(0.1, 0.1))
    await worker.start()
    try:

        async def settled() -> bool:
            events = await events_for(runtime, recording_id)
            return len(events) == 1 and events[0].status != EventStatus.PENDING

        await wait_until(settled, what="webhook event settled")
    finally:
        await worker.stop()
    return (await events_for(runtime, recording_id))[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_worker_refuses_to_send_a_webhook_to_a_private_address(
    api, runtime, account, receiver, host
):
    url = f"http://{host}:{receiver.port}/hook"
    connection_id = await create_application(api, account.api_key, url)
    refusing = dataclasses.replace(
        runtime,
        settings=dataclasses.replace(runtime.settings, allow_private_networks=False),
    )
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await run_until_settled(refusing, recording_id)
    assert event.status == EventStatus.FAILED  # refused for good, not retried for a day
    [attempt] = await attempts_for(runtime, event.id)
    assert attempt.status_code is None
    assert attempt.error and "not a public address" in attempt.error
    assert receiver.received == []


async def test_the_worker_does_not_follow_a_redirect(api, runtime, account, receiver):
    receiver.replies["/hook"] = Reply(302, {"Location": f"{receiver.url}/elsewhere"})
    connection_id = await create_application(api, account.api_key, f"{receiver.url}/hook")
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await run_until_settled(runtime, recording_id)
    assert [r.path for r in receiver.received] == ["/hook"]
    [attempt] = await attempts_for(runtime, event.id)
    assert attempt.status_code == 302
    assert event.status == EventStatus.FAILED
