"""The permanent-failure path end to end, through `callvault serve` as shipped (the console
script; API + worker), a real SeaweedFS and a webhook receiver checking signatures.

tests/worker/test_custom_storage.py covers the same transitions in-process, one recording at a
time; here they run over HTTP against the real processes, with several recordings, both
webhook API versions and both databases, and the customer's view at every step (webhooks,
`GET /v2/recordings`, the download link, the bucket):

- wrong secret → `call.recording.error` (v2: envelope with `reason` + `detail`; v1: flat
  `recording_error`) → listed as failed, still downloadable from the default store → the
  credentials are fixed with PUT → `call.recording.saved` with the customer URLs, the bytes
  intact, the default-store copies gone;
- a missing bucket → error → the bucket is created → `POST …/actions/redeliver` → saved;
- transient failures that outlast the give-up horizon (CALLVAULT_UPLOAD_GIVE_UP_SECS, 24 h by
  default, 3 s here) become permanent ("Internal server error"), then redelivery stores them
  once the store is back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
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
    files_under,
    fresh_database,
    ingest_until_accepted,
    read_object,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import Delivery, WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, ingest_metadata, set_credentials

AUTH_REASON = "Failed to authorize with storage using custom credentials"
WRONG_SECRET = "not-the-secret-" + "x" * 24


@dataclass
class Embedded:
    """One `callvault serve` with an account, its HTTP client and a webhook receiver."""

    serve: CallvaultProcess
    data_dir: Path
    account: dict[str, str]
    ingest_token: str
    client: httpx.AsyncClient
    receiver: WebhookReceiver

    async def ingest(self, connection_id: str, count: int) -> list[Sent]:
        sent = [Sent(ingest_metadata(connection_id), noise_wav(0.5)) for _ in range(count)]
        for one in sent:
            await ingest_until_accepted(self.client, self.serve.url, self.ingest_token, one)
        return sent

    async def recordings(self, connection_id: str) -> dict[str, dict[str, Any]]:
        listed = await self.client.get(
            "/v2/recordings",
            params={"filter[connection_id]": connection_id, "page[size]": 250},
        )
        assert listed.status_code == 200, listed.text
        return {r["id"]: r for r in listed.json()["data"]}

    async def webhooks(
        self, count: int, where: Callable[[Delivery], bool], within: float = 20.0
    ) -> list[Delivery]:
        found = await self.receiver.wait_for(count, within=within, where=where)
        for delivery in found:
            verify_signature(delivery, self.account["webhook_public_key"])
        return found


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await embedded(database="sqlite"|"postgresql", **env)`: a started `callvault serve`;
    everything it started is stopped afterwards (processes before their database)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(database: str = "sqlite", **env_values: str) -> Embedded:
            data_dir = tmp_path / f"data-{secrets.token_hex(3)}"
            env = clean_environment(
                CALLVAULT_DATA_DIR=str(data_dir),
                CALLVAULT_WEBHOOK_SCHEDULE="0.5,1,1",
                **env_values,
            )
            if database == "postgresql":
                env["CALLVAULT_DATABASE_URL"] = await stack.enter_async_context(fresh_database())
                # on PostgreSQL no process invents a key: serve refuses to start without one
                env.setdefault(
                    "CALLVAULT_ENCRYPTION_KEYS", base64.b64encode(secrets.token_bytes(32)).decode()
                )
                run_cli(env, "migrate")  # serve migrates only the embedded SQLite database
            account = json.loads(run_cli(env, "accounts", "create", "permanent", "--json"))
            processes = stack.enter_context(Processes(data_dir.with_name(data_dir.name + "-logs")))
            receiver = stack.enter_context(WebhookReceiver())
            serve = processes.api("serve", env).start()
            await asyncio.to_thread(serve.wait_ready)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=serve.url,
                    headers={"Authorization": f"Bearer {account['api_key']}"},
                    timeout=30,
                )
            )
            return Embedded(
                serve=serve,
                data_dir=data_dir,
                account=account,
                ingest_token=(data_dir / "ingest.token").read_text().strip(),
                client=client,
                receiver=receiver,
            )

        yield start


def s3_generic(server: SeaweedFS, bucket: str, **overrides: str) -> dict[str, str]:
    return {
        "bucket": bucket,
        "region": server.region,
        "endpoint": server.endpoint,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        **overrides,
    }


def body_of(delivery: Delivery, version: str) -> tuple[str, dict[str, Any]]:
    """(event type, payload) in the version's own shape, checked strictly."""
    body = delivery.json()
    if version == "1":
        assert set(body) == {"created_at", "event_type", "payload", "record_type", "webhook_id"}
        return body["event_type"], body["payload"]
    assert set(body) == {"data", "meta"} and body["meta"]["attempt"] >= 1
    return body["data"]["event_type"], body["data"]["payload"]


async def wait_for(check: Callable[[], Any], within: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what} not reached within {within} s"
        await asyncio.sleep(0.1)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("version", "database"), [("1", "sqlite"), ("2", "postgresql")])
async def test_wrong_secret_fails_then_fixed_credentials_deliver(
    embedded: Callable[..., Any], seaweedfs: SeaweedFS, version: str, database: str
) -> None:
    cv: Embedded = await embedded(database)
    api_key = cv.account["api_key"]
    auth = {"Authorization": f"Bearer {api_key}"}
    bucket = f"perm-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(bucket)
    connection_id = await create_application(
        cv.client, api_key, cv.receiver.url(), api_version=version
    )
    await set_credentials(
        cv.client,
        api_key,
        connection_id,
        "s3-generic",
        s3_generic(seaweedfs, bucket, aws_secret_access_key=WRONG_SECRET),
    )
    sent = await cv.ingest(connection_id, 3)
    by_id = {s.recording_id: s for s in sent}

    # 1. the error webhooks: the spec's reason, the backend's own reason as detail, no secret
    error_type = "recording_error" if version == "1" else "call.recording.error"
    errors = await cv.webhooks(3, lambda d: body_of(d, version)[0] == error_type)
    for delivery in errors:
        _, payload = body_of(delivery, version)
        assert payload["reason"] == AUTH_REASON
        assert "s3-generic" in payload["detail"] and bucket in payload["detail"]
        assert WRONG_SECRET not in delivery.body
        assert set(payload) >= {"call_leg_id", "connection_id", "recording_id", "detail"}
        assert ("occurred_at" in payload) == (version == "1")
    assert {body_of(d, version)[1]["recording_id"] for d in errors} == set(by_id)

    # 2. listed as failed, kept in the default store: the download link serves the bytes
    listed = await cv.recordings(connection_id)
    assert set(listed) == set(by_id)
    for recording_id, recording in listed.items():
        assert recording["storage"] == {
            "state": "failed",
            "location": "default",
            "backend": None,
            "error": AUTH_REASON,
            # the precise reason, as the webhook's `detail` says it (issue 26)
            "detail": recording["storage"]["detail"],
        }
        assert recording["storage"]["detail"], recording["storage"]
        download = await cv.client.get(recording["download_urls"]["wav"])
        assert download.status_code == 200
        assert sha256(download.content) == sha256(by_id[recording_id].audio)
    single = await cv.client.get(f"/v2/recordings/{sent[0].recording_id}", headers=auth)
    assert single.json()["data"]["storage"]["state"] == "failed"

    # 3. the credentials are fixed (PUT): every failed recording is stored, saved webhooks
    await set_credentials(
        cv.client, api_key, connection_id, "s3-generic", s3_generic(seaweedfs, bucket), replace=True
    )
    saved_type = "recording_saved" if version == "1" else "call.recording.saved"
    saved = await cv.webhooks(3, lambda d: body_of(d, version)[0] == saved_type)
    prefix = f"{seaweedfs.endpoint}/{bucket}/"
    for delivery in saved:
        _, payload = body_of(delivery, version)
        url = payload["recording_urls"]["wav"]
        assert url.startswith(prefix), url
        sent_one = by_id[payload["recording_id"]]
        assert f"/{sent_one.metadata['call_leg_id']}-" in url
        stored = await read_object(seaweedfs, bucket, url.removeprefix(prefix))
        assert sha256(stored) == sha256(sent_one.audio)

    # 4. listed as stored in custom storage; the default-store copies are gone
    async def moved() -> bool:
        states = [r["storage"] for r in (await cv.recordings(connection_id)).values()]
        return all(s["location"] == "custom" and s["state"] == "stored" for s in states) and (
            files_under(cv.data_dir / "recordings") == []
        )

    await wait_for(moved, what="stored in custom storage, staging copies removed")
    listed = await cv.recordings(connection_id)
    for recording_id, recording in listed.items():
        assert recording["download_urls"]["wav"].startswith(prefix)
        assert recording["storage"]["backend"] == "s3-generic"
        assert recording["sha256"] == sha256(by_id[recording_id].audio)


async def test_missing_bucket_fails_then_redeliver_stores_it(
    embedded: Callable[..., Any], seaweedfs: SeaweedFS
) -> None:
    cv: Embedded = await embedded()
    api_key = cv.account["api_key"]
    auth = {"Authorization": f"Bearer {api_key}"}
    bucket = f"later-{secrets.token_hex(6)}"  # not created yet
    connection_id = await create_application(cv.client, api_key, cv.receiver.url())
    await set_credentials(
        cv.client, api_key, connection_id, "s3-generic", s3_generic(seaweedfs, bucket)
    )
    [sent] = await cv.ingest(connection_id, 1)
    [error] = await cv.webhooks(1, lambda d: d.event_type == "call.recording.error")
    assert error.payload["reason"] == AUTH_REASON and bucket in error.payload["detail"]
    path = f"/v2/recordings/{sent.recording_id}/actions/redeliver"

    seaweedfs.create_bucket(bucket)
    response = await cv.client.post(path, headers=auth)
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "received"
    [saved] = await cv.webhooks(1, lambda d: d.event_type == "call.recording.saved")
    url = saved.payload["recording_urls"]["wav"]
    assert url.startswith(f"{seaweedfs.endpoint}/{bucket}/")
    stored = await read_object(seaweedfs, bucket, url.split(f"/{bucket}/", 1)[1])
    assert sha256(stored) == sha256(sent.audio)

    async def staging_gone() -> bool:
        return files_under(cv.data_dir / "recordings") == []

    await wait_for(staging_gone, what="staging copy removed")
    # in the customer's bucket now: nothing left to redeliver from
    again = await cv.client.post(path, headers=auth)
    assert again.status_code == 422, again.text


async def test_transient_failures_past_the_horizon_become_permanent(
    embedded: Callable[..., Any], tmp_path: Path
) -> None:
    cv: Embedded = await embedded(
        CALLVAULT_UPLOAD_GIVE_UP_SECS="3", CALLVAULT_UPLOAD_BACKOFF_CAP_SECS="0.5"
    )
    api_key = cv.account["api_key"]
    auth = {"Authorization": f"Bearer {api_key}"}
    down = SeaweedFS(tmp_path / "down-s3")  # ports chosen, not started: connection refused
    try:
        bucket = "comes-back-later"
        connection_id = await create_application(cv.client, api_key, cv.receiver.url())
        await set_credentials(
            cv.client, api_key, connection_id, "s3-generic", s3_generic(down, bucket)
        )
        started = time.monotonic()
        [sent] = await cv.ingest(connection_id, 1)
        [error] = await cv.webhooks(1, lambda d: d.event_type == "call.recording.error")
        waited = time.monotonic() - started
        assert error.payload["reason"] == "Internal server error"
        assert error.payload["detail"].startswith(
            "custom storage kept failing for more than 3 s; last error: "
        )
        assert waited >= 3.0  # not before the horizon
        recording = (await cv.recordings(connection_id))[sent.recording_id]
        assert recording["storage"]["state"] == "failed"
        assert recording["storage"]["error"] == "Internal server error"

        down.start()  # the store is back: redelivery stores it
        down.create_bucket(bucket)
        response = await cv.client.post(
            f"/v2/recordings/{sent.recording_id}/actions/redeliver", headers=auth
        )
        assert response.status_code == 202, response.text
        [saved] = await cv.webhooks(1, lambda d: d.event_type == "call.recording.saved")
        key = saved.payload["recording_urls"]["wav"].split(f"/{bucket}/", 1)[1]
        assert sha256(await read_object(down, bucket, key)) == sha256(sent.audio)
    finally:
        down.stop()
