"""Soak: many recordings through the scaled-out mode under continuous chaos (not part of CI).

    .venv/bin/python bench/soak.py [--recordings 10000] [--concurrency 8] [--json] [--src DIR]

PostgreSQL (a fresh database on CALLVAULT_TEST_POSTGRES's server), one `callvault serve
--no-worker`, two `callvault worker`s, the default store on one SeaweedFS, the customer's bucket
(s3-generic) on another, a receiver that verifies signatures. While the recordings are
ingested (concurrency C, a media server that sends again what was not answered):
- a worker is killed with SIGKILL every 20 s (alternating) and started again at once,
- the customer's SeaweedFS is killed for 15 s every 2 minutes,
- the receiver answers 500 for 10 s every minute.
Afterwards (once everything converged): lost recordings (accepted but not in the bucket with
their sha256, or without a verified call.recording.saved), duplicate deliveries (the same event
accepted twice), and each process's memory (VmRSS sampled every 5 s: the API's over the whole
run, each worker incarnation's first and last sample). `--src DIR` runs callvault from another
tree's src/ (a before/after pair).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tests.faults.cluster import (
    CallvaultProcess,
    Processes,
    Sent,
    clean_environment,
    fresh_database,
    ingest_paced,
    list_bucket,
    query,
    read_object,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import ingest_metadata

DEFAULT_BUCKET = "soak-default"
CUSTOMER_BUCKET = "soak-customer"


def rss_kib(process: CallvaultProcess) -> int | None:
    if not process.running:
        return None
    try:
        status = Path(f"/proc/{process.current.process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


async def soak(recordings: int, concurrency: int, src: Path | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="callvault-soak-"))
    default_s3 = SeaweedFS(tmp / "default-s3").start()
    customer_s3 = SeaweedFS(
        tmp / "customer-s3", access_key="soak-customer", secret_key="soak-customer-secret-0123"
    ).start()
    receiver = WebhookReceiver().start()
    default_s3.create_bucket(DEFAULT_BUCKET)
    customer_s3.create_bucket(CUSTOMER_BUCKET)
    try:
        async with fresh_database() as database_url:
            with Processes(tmp / "logs") as processes:
                return await run(
                    tmp,
                    database_url,
                    processes,
                    default_s3,
                    customer_s3,
                    receiver,
                    recordings,
                    concurrency,
                    src,
                )
    finally:
        receiver.stop()
        customer_s3.stop()
        default_s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def run(
    tmp: Path,
    database_url: str,
    processes: Processes,
    default_s3: SeaweedFS,
    customer_s3: SeaweedFS,
    receiver: WebhookReceiver,
    recordings: int,
    concurrency: int,
    src: Path | None,
) -> dict[str, Any]:
    extra = {"PYTHONPATH": str(src)} if src is not None else {}
    env = clean_environment(
        CALLVAULT_DATABASE_URL=database_url,
        CALLVAULT_DEFAULT_STORE=(
            f"s3://{DEFAULT_BUCKET}?region={default_s3.region}&endpoint={default_s3.endpoint}"
        ),
        AWS_ACCESS_KEY_ID=default_s3.access_key,
        AWS_SECRET_ACCESS_KEY=default_s3.secret_key,
        CALLVAULT_ENCRYPTION_KEYS=base64.b64encode(secrets.token_bytes(32)).decode(),
        CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
        CALLVAULT_WEBHOOK_SCHEDULE=",".join(["1", "2"] + ["5"] * 20),
        CALLVAULT_WORKER_LEASE_SECS="10",
        CALLVAULT_UPLOAD_BACKOFF_CAP_SECS="5",
        **extra,
    )
    cli_env = {**env, "CALLVAULT_DATA_DIR": str(tmp / "data-cli")}
    run_cli(cli_env, "migrate")
    account = json.loads(run_cli(cli_env, "accounts", "create", "soak", "--json"))
    api = processes.api("api", {**env, "CALLVAULT_DATA_DIR": str(tmp / "data-api")}, "--no-worker")
    workers = [
        processes.worker(name, {**env, "CALLVAULT_DATA_DIR": str(tmp / f"data-{name}")})
        for name in ("worker-a", "worker-b")
    ]
    for process in (api, *workers):
        process.start()
    for process in (api, *workers):
        await asyncio.to_thread(process.wait_ready)
    headers = {"Authorization": f"Bearer {account['api_key']}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v2/call_control_applications",
            json={
                "application_name": "soak",
                "webhook_event_url": receiver.url(),
                "webhook_api_version": "2",
            },
        )
        connection_id = created.json()["data"]["id"]
        stored = await client.post(
            f"/v2/custom_storage_credentials/{connection_id}",
            json={
                "backend": "s3-generic",
                "configuration": {
                    "bucket": CUSTOMER_BUCKET,
                    "region": customer_s3.region,
                    "endpoint": customer_s3.endpoint,
                    "aws_access_key_id": customer_s3.access_key,
                    "aws_secret_access_key": customer_s3.secret_key,
                },
            },
        )
        assert stored.status_code == 200, stored.text

    sent = [Sent(ingest_metadata(connection_id), noise_wav(0.5)) for _ in range(recordings)]
    started = time.monotonic()
    done = asyncio.Event()
    samples: dict[str, list[tuple[float, int]]] = {}
    chaos: Counter[str] = Counter()

    async def sample_memory() -> None:
        while not done.is_set():
            for process in processes.all:
                kib = rss_kib(process)
                if kib is not None:
                    at = round(time.monotonic() - started, 1)
                    samples.setdefault(process.current.label, []).append((at, kib))
            await asyncio.sleep(5)

    async def kill_workers() -> None:
        turn = 0
        while not done.is_set():
            await asyncio.sleep(20)
            worker = workers[turn % 2]
            worker.kill()
            worker.start()
            await asyncio.to_thread(worker.wait_ready)
            chaos["worker_kills"] += 1
            turn += 1

    async def bucket_outages() -> None:
        while not done.is_set():
            await asyncio.sleep(105)
            customer_s3.kill()
            await asyncio.sleep(15)
            await asyncio.to_thread(customer_s3.start)
            chaos["bucket_outages"] += 1

    async def receiver_bursts() -> None:
        while not done.is_set():
            await asyncio.sleep(50)
            receiver.answer(500, seconds=10)
            chaos["receiver_500_bursts"] += 1

    verified: set[str] = set()
    accepted: Counter[str] = Counter()
    bad_signatures = cut_requests = 0
    seen = 0

    def verify_new() -> None:
        # the SDK refuses timestamps older than 5 minutes: verified as they arrive
        nonlocal seen, bad_signatures, cut_requests
        deliveries = receiver.received()
        for delivery in deliveries[seen:]:
            if 200 <= delivery.answered < 300:
                declared = int(delivery.headers.get("content-length") or 0)
                if len(delivery.body.encode()) < declared:
                    # the sender was killed mid-request: the test receiver records requests
                    # on arrival, a real one would not have taken a cut body
                    cut_requests += 1
                    continue
                try:
                    verify_signature(delivery, account["webhook_public_key"])
                except ValueError:
                    bad_signatures += 1
                    continue
                verified.add(delivery.payload["recording_id"])
                accepted[delivery.event_id] += 1
        seen = len(deliveries)

    async def verifier() -> None:
        while not done.is_set():
            verify_new()
            await asyncio.sleep(2)

    background = [
        asyncio.create_task(task())
        for task in (sample_memory, kill_workers, bucket_outages, receiver_bursts, verifier)
    ]
    await ingest_paced(
        api.url, env["CALLVAULT_INGEST_TOKEN"], sent, every=0.0, concurrency=concurrency
    )
    ingest_secs = time.monotonic() - started
    # chaos continues until everything has converged
    while True:
        [row] = await query(
            database_url,
            """select count(*) filter (where status = 'stored' and backend is not null) as stored,
                      count(*) filter (where default_store_key is not null) as staged,
                      (select count(*) from webhook_events where status <> 'delivered') as open
               from recordings""",
        )
        if row["stored"] == recordings and row["staged"] == 0 and row["open"] == 0:
            break
        await asyncio.sleep(2)
    converged_secs = time.monotonic() - started
    done.set()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    for process in processes.all:
        await asyncio.to_thread(process.terminate)

    by_leg = {s.metadata["call_leg_id"]: s for s in sent}
    keys = await list_bucket(customer_s3, CUSTOMER_BUCKET)
    intact = set()
    for key in keys:
        leg = key.rsplit("/", 1)[1].rsplit("-", 1)[0]
        data = await read_object(customer_s3, CUSTOMER_BUCKET, key)
        if (
            leg in by_leg
            and hashlib.sha256(data).digest() == hashlib.sha256(by_leg[leg].audio).digest()
        ):
            intact.add(by_leg[leg].recording_id)
    verify_new()
    ids = {s.recording_id for s in sent}
    duplicates = sum(1 for n in accepted.values() if n > 1)
    api_rss = samples.get("api.0", [])
    third = max(1, len(api_rss) // 3)
    return {
        "recordings": recordings,
        "lost": len(ids - (intact & verified)),
        "bad_signatures": bad_signatures,
        "cut_requests": cut_requests,
        "duplicate_events": duplicates,
        "duplicate_pct": round(100 * duplicates / max(1, len(accepted)), 2),
        "ingest_secs": round(ingest_secs, 1),
        "converged_secs": round(converged_secs, 1),
        "chaos": dict(chaos),
        "api_rss_mib_first_third_avg": round(sum(k for _, k in api_rss[:third]) / third / 1024, 1),
        "api_rss_mib_last_third_avg": round(sum(k for _, k in api_rss[-third:]) / third / 1024, 1),
        "worker_rss_mib_first_last": {
            label: [round(points[0][1] / 1024, 1), round(points[-1][1] / 1024, 1)]
            for label, points in samples.items()
            if label.startswith("worker") and points
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--src", type=Path, help="run callvault from this src/ dir")
    args = parser.parse_args()
    src = args.src.resolve() if args.src is not None else None
    result = asyncio.run(soak(args.recordings, args.concurrency, src))
    print(json.dumps(result, indent=None if args.json else 2))
    if result["lost"] or result["bad_signatures"] or result["duplicate_pct"] > 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
