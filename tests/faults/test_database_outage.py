"""The database goes away: a private PostgreSQL cluster (initdb + pg_ctl from
/usr/lib/postgresql/15/bin, on a free port) is stopped (`pg_ctl stop -m immediate`: clients
see a crash) for 15 s while recordings are being ingested and uploaded, then started again.

One `callvault serve --no-worker`, one `callvault worker`, the default store a directory both
share, the customer's bucket on SeaweedFS (s3-generic), a receiver that verifies signatures.
While the database is away ingest answers 503 + Retry-After (never 202 without a row, never
500) and `/ready` says so; the worker backs off; nobody is restarted. Afterwards: every
accepted recording in the customer's bucket with the sha256 of the bytes sent and a verified
`call.recording.saved`, no 5xx other than 503/507, nothing left in the default store or in a
data dir."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.faults.cluster import (
    Processes,
    assert_all_landed,
    clean_environment,
    files_under,
    list_bucket,
    open_uploads,
    query,
    read_object,
    run_cli,
)
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import PrivatePostgres, SeaweedFS
from tests.worker.flow import ingest_metadata

RECORDINGS = 48
OUTAGE_SECS = 15.0
BUCKET = "outage-recordings"
CONVERGE_WITHIN = 90.0

pytestmark = pytest.mark.slow


async def ingest_all(
    url: str, token: str, batch: list[tuple[dict, bytes]], answers: Counter[int], ids: dict
) -> None:
    """Bursts of 4, one every 0.4 s; each recording sent again (same metadata) until taken."""
    gate = asyncio.Semaphore(4)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0)) as client:

        async def one(index: int, metadata: dict, audio: bytes) -> None:
            await asyncio.sleep(max(0.0, started + (index // 4) * 0.4 - time.monotonic()))
            async with gate:
                deadline = time.monotonic() + 120
                while True:
                    response = await client.post(
                        f"{url}/internal/v1/recordings",
                        files={
                            "metadata": (None, json.dumps(metadata), "application/json"),
                            "audio": ("r.wav", audio, "audio/wav"),
                        },
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    answers[response.status_code] += 1
                    if response.status_code in (200, 202):
                        ids[metadata["call_leg_id"]] = response.json()["data"]["id"]
                        return
                    assert response.status_code in (503, 507), response.text
                    assert response.headers.get("retry-after"), response.headers
                    assert response.json()["errors"][0]["title"] == "Service unavailable"
                    assert time.monotonic() < deadline, "never accepted"
                    await asyncio.sleep(0.3)

        await asyncio.gather(*(one(i, m, a) for i, (m, a) in enumerate(batch)))


async def test_postgresql_stopped_for_15_s_mid_ingest_and_upload(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    seaweedfs.create_bucket(BUCKET)
    shared_store = tmp_path / "default-store"
    receiver = WebhookReceiver().start()
    with PrivatePostgres() as postgres, Processes(tmp_path / "logs") as processes:
        run_migrations_env = clean_environment(
            CALLVAULT_DATABASE_URL=postgres.url(),
            CALLVAULT_DEFAULT_STORE=f"file://{shared_store}",
            CALLVAULT_ENCRYPTION_KEYS=base64.b64encode(secrets.token_bytes(32)).decode(),
            CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
            CALLVAULT_WEBHOOK_SCHEDULE=",".join(["1", "2"] + ["3"] * 12),
            CALLVAULT_WORKER_LEASE_SECS="6",
            CALLVAULT_UPLOAD_BACKOFF_CAP_SECS="2",
        )
        env = run_migrations_env
        data_dirs = {name: tmp_path / f"data-{name}" for name in ("cli", "api", "worker")}
        cli_env = {**env, "CALLVAULT_DATA_DIR": str(data_dirs["cli"])}
        run_cli(cli_env, "migrate")
        account = json.loads(run_cli(cli_env, "accounts", "create", "outage", "--json"))
        api = processes.api(
            "api", {**env, "CALLVAULT_DATA_DIR": str(data_dirs["api"])}, "--no-worker"
        )
        worker = processes.worker("worker", {**env, "CALLVAULT_DATA_DIR": str(data_dirs["worker"])})
        for process in (api, worker):
            process.start()
        for process in (api, worker):
            await asyncio.to_thread(process.wait_ready)

        headers = {"Authorization": f"Bearer {account['api_key']}"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
            created = await client.post(
                "/v2/call_control_applications",
                json={
                    "application_name": "outage",
                    "webhook_event_url": receiver.url(),
                    "webhook_api_version": "2",
                },
            )
            assert created.status_code == 201, created.text
            connection_id = created.json()["data"]["id"]
            stored = await client.post(
                f"/v2/custom_storage_credentials/{connection_id}",
                json={
                    "backend": "s3-generic",
                    "configuration": {
                        "bucket": BUCKET,
                        "region": seaweedfs.region,
                        "endpoint": seaweedfs.endpoint,
                        "aws_access_key_id": seaweedfs.access_key,
                        "aws_secret_access_key": seaweedfs.secret_key,
                    },
                },
            )
            assert stored.status_code == 200, stored.text

        batch = [
            (ingest_metadata(connection_id), noise_wav(1.0 + (i % 3))) for i in range(RECORDINGS)
        ]
        answers: Counter[int] = Counter()
        ids: dict[str, str] = {}
        figures: dict[str, object] = {}

        async def outage() -> None:
            # stop the database while the worker's log shows uploads in progress
            deadline = time.monotonic() + 8
            while not (busy := open_uploads(worker.current)) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            figures["uploads_open_at_stop"] = len(busy)
            figures["accepted_before_stop"] = len(ids)
            await asyncio.to_thread(postgres.stop, "immediate")
            stopped = time.monotonic()
            accepted_at_stop = len(ids)  # requests in flight during the stop may finish first
            async with httpx.AsyncClient(timeout=10) as client:
                ready = await client.get(f"{api.url}/ready")
                figures["ready_during_outage"] = ready.status_code
                assert (await client.get(f"{api.url}/health")).status_code == 200
            await asyncio.sleep(max(0.0, stopped + OUTAGE_SECS - time.monotonic()))
            figures["accepted_during_outage"] = len(ids) - accepted_at_stop
            await asyncio.to_thread(postgres.start)

        started = time.monotonic()
        await asyncio.gather(
            ingest_all(api.url, env["CALLVAULT_INGEST_TOKEN"], batch, answers, ids), outage()
        )
        restarted_at = time.monotonic()
        assert len(ids) == RECORDINGS

        deadline = time.monotonic() + CONVERGE_WITHIN
        while True:
            [row] = await query(
                postgres.url(),
                """select
                     count(*) filter (where status = 'stored' and backend = 's3-generic') as stored,
                     count(*) filter (where default_store_key is not null) as staged,
                     (select count(*) from webhook_events where status <> 'delivered') as open,
                     (select count(*) from webhook_events) as events
                   from recordings""",
            )
            if (
                row["stored"] == RECORDINGS
                and row["staged"] == 0
                and row["open"] == 0
                and row["events"] >= RECORDINGS
            ):
                break
            assert time.monotonic() < deadline, f"not converged: {dict(row)}\n{processes.logs()}"
            await asyncio.sleep(0.5)
        figures["converged_after_restart_secs"] = round(time.monotonic() - restarted_at, 1)
        figures["total_secs"] = round(time.monotonic() - started, 1)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{api.url}/ready")).status_code == 200
        exit_codes = {p.current.label: await asyncio.to_thread(p.terminate) for p in processes.all}

        objects = {
            key: await read_object(seaweedfs, BUCKET, key)
            for key in await list_bucket(seaweedfs, BUCKET)
        }
    receiver.stop()

    figures["answers"] = dict(answers)
    print(f"\ndatabase outage fault test: {json.dumps(figures)}")
    # ingest: only 503 while the database was away, never a 500, and it did happen mid-ingest
    assert not [s for s in answers if s >= 500 and s not in (503, 507)], answers
    assert answers[503] >= 1 and figures["ready_during_outage"] == 503
    assert figures["accepted_during_outage"] == 0  # no 202 without a committed row
    assert 0 < int(figures["accepted_before_stop"]) < RECORDINGS  # type: ignore[call-overload]
    assert int(figures["uploads_open_at_stop"]) >= 1  # type: ignore[call-overload]
    # every accepted recording in the customer's bucket, identical bytes, exactly once
    # and a verified saved webhook for each
    assert len(batch) == RECORDINGS
    assert_all_landed(
        objects,
        {m["call_leg_id"]: audio for m, audio in batch},
        receiver.received(),
        account["webhook_public_key"],
        ids.values(),
    )
    # nothing left: the shared default store, every data dir's temp areas
    assert [p for p in files_under(shared_store)] == []
    assert files_under(*(d for n, d in data_dirs.items() if n != "cli")) == []
    assert exit_codes["worker.0"] == 0
