"""Webhook delivery against a real receiver: retries, failover, 4xx, timeouts, attempts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookEvent
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.worker.flow import (
    attempts_for,
    create_application,
    events_for,
    ingest,
    make_wav,
    wait_until,
)

AUDIO = make_wav(0.2)


async def settled_event(runtime: Runtime, recording_id: str, status: str) -> WebhookEvent:
    async def reached() -> bool:
        events = await events_for(runtime, recording_id)
        return len(events) == 1 and events[0].status == status

    await wait_until(reached, what=f"event {status}")
    return (await events_for(runtime, recording_id))[0]


async def test_retried_until_the_receiver_recovers(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(500, times=1)
    webhook_receiver.answer(429, times=1)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    deliveries = await webhook_receiver.wait_for(3)
    assert [d.answered for d in deliveries] == [500, 429, 200]
    assert [d.json()["meta"]["attempt"] for d in deliveries] == [1, 2, 3]
    assert len({d.event_id for d in deliveries}) == 1  # the event id never changes
    for delivery in deliveries:
        webhook_receiver.verify(delivery, account.webhook_public_key)
    # the schedule (0.2 s, 0.4 s ±20 %) separates the rounds
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(deliveries)]
    assert gaps[0] >= 0.15 and gaps[1] >= 0.3
    event = await settled_event(runtime, recording_id, "delivered")
    assert event.attempts == 3 and event.id == deliveries[0].event_id
    attempts = await attempts_for(runtime, event.id)
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 429), (3, 200)]
    assert attempts[0].error == "HTTP 500" and attempts[2].error is None
    assert all(a.latency_ms is not None and a.latency_ms >= 0 for a in attempts)


async def test_failover_url_is_tried_in_the_same_round(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    primary, failover = webhook_receiver.url("/primary"), webhook_receiver.url("/failover")
    webhook_receiver.answer(503, times=2, path="/primary")
    webhook_receiver.answer(502, times=1, path="/failover")
    connection_id = await create_application(api, account.api_key, primary, failover_url=failover)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    deliveries = await webhook_receiver.wait_for(4)
    assert [(d.path, d.answered, d.json()["meta"]["attempt"]) for d in deliveries] == [
        ("/primary", 503, 1),
        ("/failover", 502, 1),
        ("/primary", 503, 2),
        ("/failover", 200, 2),
    ]
    assert [d.json()["meta"]["delivered_to"] for d in deliveries] == [
        primary,
        failover,
        primary,
        failover,
    ]
    # the failover request follows the primary one at once, not after a schedule delay
    assert deliveries[1].received_at - deliveries[0].received_at < 0.15
    event = await settled_event(runtime, recording_id, "delivered")
    attempts = await attempts_for(runtime, event.id)
    assert [(a.attempt, a.url, a.status_code) for a in attempts] == [
        (1, primary, 503),
        (1, failover, 502),
        (2, primary, 503),
        (2, failover, 200),
    ]
    await asyncio.sleep(0.3)
    assert len(webhook_receiver.received()) == 4


async def test_a_4xx_stops_delivery(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(404, times=100)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "failed")
    assert event.attempts == 1 and event.last_error and "HTTP 404" in event.last_error
    await asyncio.sleep(0.5)  # longer than the first schedule step
    assert len(webhook_receiver.received()) == 1


async def test_a_4xx_at_the_primary_still_reaches_the_failover(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(410, times=100, path="/primary")
    connection_id = await create_application(
        api,
        account.api_key,
        webhook_receiver.url("/primary"),
        failover_url=webhook_receiver.url("/failover"),
    )
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "delivered")
    assert [d.path for d in webhook_receiver.received()] == ["/primary", "/failover"]
    assert event.attempts == 1


async def test_a_slow_receiver_times_out_and_is_retried(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.stall(1.6, times=1)
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), timeout_secs=1
    )
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "delivered")
    attempts = await attempts_for(runtime, event.id)
    assert [a.status_code for a in attempts] == [None, 200]
    assert attempts[0].error and attempts[0].error.startswith("timed out after 1 s")
    assert 900 <= (attempts[0].latency_ms or 0) < 1500
    assert event.attempts == 2


async def test_the_schedule_runs_out(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(500, seconds=60)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    await start_worker(webhook_schedule=(0.1, 0.1))
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "failed")
    assert event.attempts == 3  # the first round and one per schedule step
    assert len(webhook_receiver.received()) == 3


async def test_connection_refused_is_retried(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    from tests.servers import closed_port

    connection_id = await create_application(
        api,
        account.api_key,
        f"http://127.0.0.1:{closed_port()}/nobody",
        failover_url=webhook_receiver.url(),
    )
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "delivered")
    [refused, delivered] = await attempts_for(runtime, event.id)
    assert refused.status_code is None and refused.error == "connection refused"
    assert delivered.status_code == 200


async def test_inactive_application_is_not_called(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), active=False
    )
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    event = await settled_event(runtime, recording_id, "failed")
    assert event.last_error == "application is inactive: not sent"
    assert await attempts_for(runtime, event.id) == []
    assert webhook_receiver.received() == []


@pytest.mark.parametrize("version", ["1", "2"])
async def test_both_api_versions_are_signed_and_shaped(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    version: str,
) -> None:
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), api_version=version
    )
    await start_worker()
    recording_id, _metadata = await ingest(
        api, runtime.settings.ingest_token, connection_id, AUDIO, client_state="aGk="
    )
    [delivery] = await webhook_receiver.wait_for(1)
    event = webhook_receiver.verify(delivery, account.webhook_public_key)
    assert event is not None
    assert delivery.headers["user-agent"] == "telnyx-webhooks"
    assert delivery.headers["content-type"] == "application/json"
    body = delivery.json()
    if version == "1":
        assert set(body) == {"created_at", "event_type", "payload", "record_type", "webhook_id"}
        assert body["event_type"] == "recording_saved"
        assert "occurred_at" in body["payload"]
    else:
        assert set(body) == {"data", "meta"}
        assert body["data"]["event_type"] == "call.recording.saved"
        assert "occurred_at" not in body["data"]["payload"]
    assert delivery.payload["client_state"] == "aGk="
    assert delivery.payload["recording_id"] == recording_id


async def test_default_store_links_are_fresh_on_every_attempt(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    from urllib.parse import parse_qs, urlsplit

    webhook_receiver.answer(503, times=1)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    # 1.5 s ± 20 % keeps the attempts over a second apart: links expire in whole seconds
    await start_worker(webhook_schedule=(1.5,))
    await ingest(api, runtime.settings.ingest_token, connection_id, AUDIO)
    first, second = await webhook_receiver.wait_for(2)
    assert first.event_id == second.event_id

    def expires(delivery: object) -> int:
        url = delivery.payload["recording_urls"]["wav"]  # type: ignore[attr-defined]
        return int(parse_qs(urlsplit(url).query)["expires"][0])

    # each attempt signs a new 600 s link
    assert expires(second) > expires(first)
    assert expires(first) >= int(first.headers["telnyx-timestamp"]) + 599
