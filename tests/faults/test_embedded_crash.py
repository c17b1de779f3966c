"""The same crash on the embedded mode: `callvault serve` (API + worker, SQLite, local default
store) is killed with SIGKILL while it uploads to the customer's SeaweedFS bucket and while
recordings are still coming in, then started again on the same data dir and port. The media
server (the test's ingest client) sends again what was not answered. Nothing may be lost:
every recording in the bucket once with its own sha256, a verified `call.recording.saved` for
each, and nothing left in the default store or in the data dir's temp directories."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.cluster import (
    Processes,
    Sent,
    clean_environment,
    files_under,
    ingest_paced,
    kill_mid_upload,
    list_bucket,
    read_object,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import ingest_metadata

RECORDINGS = 50
CONVERGE_WITHIN = 60.0

pytestmark = pytest.mark.slow


async def test_kill_9_mid_upload_and_restart_loses_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    bucket = f"embedded-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(bucket)
    data_dir = tmp_path / "data"
    env = clean_environment(
        CALLVAULT_DATA_DIR=str(data_dir),
        CALLVAULT_WEBHOOK_SCHEDULE="0.5,1,1,1,1,1,1,1,1,1",
        CALLVAULT_WORKER_LEASE_SECS="3",
    )
    # embedded: the data dir holds the SQLite database, the generated key and ingest token
    account = json.loads(run_cli(env, "accounts", "create", "embedded crash", "--json"))
    ingest_token = (data_dir / "ingest.token").read_text().strip()
    headers = {"Authorization": f"Bearer {account['api_key']}"}

    with WebhookReceiver() as receiver, Processes(tmp_path / "logs") as processes:
        serve = processes.api("serve", env).start().wait_ready()
        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=30) as client:
            created = await client.post(
                "/v2/call_control_applications",
                json={
                    "application_name": "embedded crash",
                    "webhook_event_url": receiver.url(),
                    "webhook_api_version": "2",
                },
            )
            assert created.status_code == 201, created.text
            connection_id = str(created.json()["data"]["id"])
            stored = await client.post(
                f"/v2/custom_storage_credentials/{connection_id}",
                json={
                    "backend": "s3-generic",
                    "configuration": {
                        "bucket": bucket,
                        "region": seaweedfs.region,
                        "endpoint": seaweedfs.endpoint,
                        "aws_access_key_id": seaweedfs.access_key,
                        "aws_secret_access_key": seaweedfs.secret_key,
                    },
                },
            )
            assert stored.status_code == 200, stored.text

        sent = [
            Sent(ingest_metadata(connection_id), noise_wav(0.5 + (i % 3) * 0.5))
            for i in range(RECORDINGS)
        ]
        started = time.monotonic()

        async def crash() -> int:
            await asyncio.sleep(2.0)  # a third of the recordings is in by then
            _, busy = await kill_mid_upload(serve)
            serve.start()
            await asyncio.to_thread(serve.wait_ready)
            return busy

        _, in_progress = await asyncio.gather(
            ingest_paced(serve.url, ingest_token, sent, every=0.4, concurrency=4), crash()
        )
        assert len({s.recording_id for s in sent}) == RECORDINGS

        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + CONVERGE_WITHIN
            while True:
                listed = await client.get("/v2/recordings", params={"page[size]": 250})
                assert listed.status_code == 200, listed.text
                states = {r["id"]: r["storage"] for r in listed.json()["data"]}
                saved = {
                    d.payload["recording_id"]
                    for d in receiver.received()
                    if d.answered == 200 and d.event_type == "call.recording.saved"
                }
                staged = files_under(data_dir / "recordings")
                done = all(
                    states.get(s.recording_id, {}).get("location") == "custom"
                    and s.recording_id in saved
                    for s in sent
                )
                if done and not staged:
                    break
                assert time.monotonic() < deadline, (
                    f"not converged: {len(saved)} saved webhooks, {len(staged)} staged files, "
                    f"states {sorted(str(v) for v in states.values())[:5]}\n{processes.logs()}"
                )
                await asyncio.sleep(0.3)
        converged_after = round(time.monotonic() - started, 1)
        assert serve.terminate() == -15  # uvicorn re-raises SIGTERM after its graceful stop

    # every recording in the bucket once, with the bytes that were sent
    objects = await list_bucket(seaweedfs, bucket)
    by_leg = {s.metadata["call_leg_id"]: s for s in sent}
    assert len(objects) == RECORDINGS
    assert sorted(key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key in objects) == sorted(by_leg)
    for key in objects:
        leg = key.rsplit("/", 1)[1].rsplit("-", 1)[0]
        data = await read_object(seaweedfs, bucket, key)
        assert hashlib.sha256(data).digest() == hashlib.sha256(by_leg[leg].audio).digest(), key

    # a verified saved webhook for each, pointing at its own object
    verified = {}
    for delivery in receiver.received():
        if delivery.answered == 200:
            verify_signature(delivery, account["webhook_public_key"])
            verified[delivery.payload["recording_id"]] = delivery.payload["recording_urls"]["wav"]
    assert set(verified) == {s.recording_id for s in sent}
    for s in sent:
        assert f"/{s.metadata['call_leg_id']}-" in verified[s.recording_id]

    # no staging copy, no temp file of the killed process (ingest, local-store put, staging)
    assert files_under(data_dir / "recordings", data_dir / "incoming", data_dir / "staging") == []
    retried = sum(1 for s in sent if s.tries > 1)
    print(
        f"\nembedded crash test: {RECORDINGS} recordings, uploads in progress at the kill: "
        f"{in_progress}, {retried} ingests sent again, {len(receiver.received())} webhook requests "
        f"for {len(verified)} recordings, converged after {converged_after} s"
    )
    assert in_progress >= 1  # the kill did land in the middle of uploads
