"""Operating the scaled-out mode, with real processes on a fresh PostgreSQL database:

- a webhook event that gave up (the receiver answered 410) is sent again by
  `POST /v2/webhook_deliveries/{id}/actions/retry` and by `callvault webhooks retry
  --all-failed`, with the same event id, and `callvault status --json` follows along;
- SIGTERM to a worker in the middle of deliveries: it stops within its drain time with exit 0
  and releases its leases at once, so another worker finishes the jobs without waiting for
  the (60 s) leases to expire.

The API and the workers share one data dir here: the default store is the local directory
(`file://`), which every process of one host can use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.cluster import (
    CallvaultProcess,
    Processes,
    Sent,
    clean_environment,
    fresh_database,
    ingest_until_accepted,
    query,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.worker.flow import create_application, ingest_metadata


@dataclass
class ScaledOut:
    env: dict[str, str]
    database_url: str
    processes: Processes
    api: CallvaultProcess
    account: dict[str, str]
    client: httpx.AsyncClient
    receiver: WebhookReceiver

    def worker(self, name: str, **env: str) -> CallvaultProcess:
        return self.processes.worker(name, {**self.env, **env}).start().wait_ready()

    async def ingest(self, connection_id: str, count: int) -> list[Sent]:
        sent = [Sent(ingest_metadata(connection_id), noise_wav(0.3)) for _ in range(count)]
        for one in sent:
            await ingest_until_accepted(
                self.client, self.api.url, self.env["CALLVAULT_INGEST_TOKEN"], one
            )
        return sent

    def status(self) -> dict[str, Any]:
        return dict(json.loads(run_cli(self.env, "status", "--json")))

    async def events(self) -> list[dict[str, Any]]:
        rows = await query(
            self.database_url,
            "select id, status, attempts, lease_owner from webhook_events order by created_at",
        )
        return [dict(row) for row in rows]


@pytest.fixture
async def scaled_out(tmp_path: Path) -> AsyncIterator[ScaledOut]:
    async with fresh_database() as database_url:
        env = clean_environment(
            CALLVAULT_DATA_DIR=str(tmp_path / "data"),
            CALLVAULT_DATABASE_URL=database_url,
            CALLVAULT_ENCRYPTION_KEYS=base64.b64encode(secrets.token_bytes(32)).decode(),
            CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
            CALLVAULT_WEBHOOK_SCHEDULE="0.5,1,1",
        )
        run_cli(env, "migrate")
        account = json.loads(run_cli(env, "accounts", "create", "operations", "--json"))
        with WebhookReceiver() as receiver, Processes(tmp_path / "logs") as processes:
            api = processes.api("api", env, "--no-worker").start()
            await asyncio.to_thread(api.wait_ready)
            async with httpx.AsyncClient(
                base_url=api.url,
                headers={"Authorization": f"Bearer {account['api_key']}"},
                timeout=30,
            ) as client:
                yield ScaledOut(env, database_url, processes, api, account, client, receiver)


async def wait_for_events(
    cluster: ScaledOut, want: str, count: int, within: float = 20.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        events = await cluster.events()
        if sum(1 for e in events if e["status"] == want) >= count:
            return events
        assert time.monotonic() < deadline, f"{count} events {want} expected: {events}"
        await asyncio.sleep(0.1)


async def test_exhausted_webhooks_are_sent_again_by_the_api_and_the_cli(
    scaled_out: ScaledOut,
) -> None:
    cluster = scaled_out
    cluster.receiver.answer(410, times=2)  # Gone: not retried, the events give up at once
    connection_id = await create_application(
        cluster.client, cluster.account["api_key"], cluster.receiver.url()
    )
    cluster.worker("worker")
    await cluster.ingest(connection_id, 2)
    events = await wait_for_events(cluster, "failed", 2)
    assert [e["attempts"] for e in events] == [1, 1]
    status = cluster.status()
    assert status["webhook_events"] == {"pending": 0, "failed": 2, "delivered": 0}
    assert status["recordings"]["stored"] == 2 and status["recordings"]["received"] == 0

    # one through the API …
    first, second = (e["id"] for e in events)
    response = await cluster.client.post(f"/v2/webhook_deliveries/{first}/actions/retry")
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "pending"
    await wait_for_events(cluster, "delivered", 1)
    # … the rest with the CLI
    out = run_cli(cluster.env, "webhooks", "retry", "--all-failed")
    assert "re-queued 1 event(s)" in out
    await wait_for_events(cluster, "delivered", 2)

    status = cluster.status()
    assert status["webhook_events"] == {"pending": 0, "failed": 0, "delivered": 2}
    assert status["oldest_pending_age_seconds"] == 0
    # the same event ids again, now answered 200 and correctly signed
    delivered = [d for d in cluster.receiver.received() if d.answered == 200]
    assert sorted(d.event_id for d in delivered) == sorted([first, second])
    for delivery in delivered:
        verify_signature(delivery, cluster.account["webhook_public_key"])
    # a delivered event is not sent again
    again = await cluster.client.post(f"/v2/webhook_deliveries/{first}/actions/retry")
    assert again.status_code == 409, again.text


async def test_sigterm_releases_the_leases_for_another_worker(scaled_out: ScaledOut) -> None:
    cluster = scaled_out
    # the receiver holds the first three requests for 6 s (the application allows 10 s)
    cluster.receiver.stall(6.0, times=3)
    connection_id = await create_application(
        cluster.client, cluster.account["api_key"], cluster.receiver.url(), timeout_secs=10
    )
    # a 60 s lease: only an explicit release lets another worker continue within seconds
    first = cluster.worker("worker-a", CALLVAULT_WORKER_DRAIN_SECS="1")
    await cluster.ingest(connection_id, 3)
    await cluster.receiver.wait_for(3, within=20)  # all three deliveries are in flight
    held = await cluster.events()
    assert {e["status"] for e in held} == {"pending"} and all(e["lease_owner"] for e in held)

    stop_started = time.monotonic()
    assert await asyncio.to_thread(first.terminate, 15.0) == 0
    stop_took = time.monotonic() - stop_started
    assert stop_took < 5.0  # 1 s of drain, then the interrupted jobs are released
    released = await cluster.events()
    assert [(e["status"], e["lease_owner"]) for e in released] == [("pending", None)] * 3
    stopped = [e["event"] for e in first.current.events()]
    assert "leases released" in stopped and "worker stopped" in stopped

    takeover_started = time.monotonic()
    cluster.worker("worker-b")
    await wait_for_events(cluster, "delivered", 3, within=15)
    takeover = time.monotonic() - takeover_started
    assert takeover < 15  # far less than the 60 s the leases would have run
    print(f"\nSIGTERM: stopped in {stop_took:.1f} s, another worker done in {takeover:.1f} s")
