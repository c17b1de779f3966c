"""A slow, lossy and partitioned network between the worker and the customer's bucket, and
between the worker and the webhook receiver.

The test builds the network itself (as root): two network namespaces, each joined to the host
by a veth pair on a private 10.231.x.0/30 range. The worker reaches SeaweedFS and the receiver
(both on this machine's loopback) only through TCP relays (tests/faults/relay.py), one inside
each namespace and one on the host side of its link, so all of its storage and webhook traffic
crosses a faulty link; ingest, the database and the default store do not. Faults: 300 ms
latency (150 ms each way, added by the relay inside the namespace: this kernel has no
sch_netem, so `tc netem` cannot be used), 5 % packet loss each way (iptables `statistic`
DROP, 2.6 % on each of the two veth crossings of a direction), then a 20 s partition (iptables
DROP of everything) of the storage link and, overlapping it, a 20 s partition of the receiver
link. Afterwards: every
accepted recording in the customer's bucket with the sha256 of the bytes sent and a verified
`call.recording.saved`, no 5xx other than 503/507, nothing left in the default store or in a
data dir. Namespaces, links and relays are removed whatever happens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
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
    fresh_database,
    list_bucket,
    query,
    read_object,
    run_cli,
)
from tests.faults.system import namespace, relay
from tests.faults.test_database_outage import ingest_all
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS, free_port
from tests.worker.flow import ingest_metadata

RECORDINGS = 40
PARTITION_SECS = 20.0
ONE_WAY_DELAY_MS = 150
LOSS_PER_CROSSING = 0.026  # two crossings per direction: 1 - 0.974**2 = 5.1 %
BUCKET = "netem-recordings"
CONVERGE_WITHIN = 150.0

pytestmark = pytest.mark.slow


async def test_latency_loss_and_partitions_lose_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    seaweedfs.create_bucket(BUCKET)
    shared_store = tmp_path / "default-store"
    receiver = WebhookReceiver().start()
    octets = random.sample(range(1, 250), 2)
    figures: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        storage_ns = stack.enter_context(namespace(octets[0]))
        hooks_ns = stack.enter_context(namespace(octets[1]))
        # worker -> relay in the namespace -> relay on the host side of the link -> server
        links = {}
        for name, ns, target_port in (
            ("storage", storage_ns, seaweedfs.port),
            ("hooks", hooks_ns, receiver.port),
        ):
            host_side = f"{ns.host_ip}:{free_port()}"
            stack.enter_context(relay(host_side, f"127.0.0.1:{target_port}"))
            inner = f"{ns.inner_ip}:{free_port()}"
            stack.enter_context(relay(inner, host_side, ns, delay_ms=ONE_WAY_DELAY_MS))
            links[name] = inner
            ns.set_loss(LOSS_PER_CROSSING)
        async with fresh_database() as database_url:
            with Processes(tmp_path / "logs") as processes:
                env = clean_environment(
                    CALLVAULT_DATABASE_URL=database_url,
                    CALLVAULT_DEFAULT_STORE=f"file://{shared_store}",
                    CALLVAULT_ENCRYPTION_KEYS=base64.b64encode(secrets.token_bytes(32)).decode(),
                    CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
                    CALLVAULT_WEBHOOK_SCHEDULE=",".join(["1", "2"] + ["3"] * 20),
                    CALLVAULT_WORKER_LEASE_SECS="10",
                    CALLVAULT_UPLOAD_BACKOFF_CAP_SECS="2",
                )
                data_dirs = {n: tmp_path / f"data-{n}" for n in ("cli", "api", "worker")}
                cli_env = {**env, "CALLVAULT_DATA_DIR": str(data_dirs["cli"])}
                run_cli(cli_env, "migrate")
                account = json.loads(run_cli(cli_env, "accounts", "create", "netem", "--json"))
                api = processes.api(
                    "api", {**env, "CALLVAULT_DATA_DIR": str(data_dirs["api"])}, "--no-worker"
                )
                worker = processes.worker(
                    "worker", {**env, "CALLVAULT_DATA_DIR": str(data_dirs["worker"])}
                )
                for process in (api, worker):
                    process.start()
                for process in (api, worker):
                    await asyncio.to_thread(process.wait_ready)
                endpoint = f"http://{links['storage']}"
                headers = {"Authorization": f"Bearer {account['api_key']}"}
                async with httpx.AsyncClient(
                    base_url=api.url, headers=headers, timeout=30
                ) as client:
                    created = await client.post(
                        "/v2/call_control_applications",
                        json={
                            "application_name": "netem",
                            "webhook_event_url": f"http://{links['hooks']}/webhooks",
                            "webhook_api_version": "2",
                            "webhook_timeout_secs": 5,
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
                                "endpoint": endpoint,
                                "aws_access_key_id": seaweedfs.access_key,
                                "aws_secret_access_key": seaweedfs.secret_key,
                            },
                        },
                    )
                    assert stored.status_code == 200, stored.text

                batch = [
                    (ingest_metadata(connection_id), noise_wav(1.0 + (i % 3)))
                    for i in range(RECORDINGS)
                ]
                answers: Counter[int] = Counter()
                ids: dict[str, str] = {}
                started = time.monotonic()

                async def at(second: float) -> None:
                    await asyncio.sleep(max(0.0, started + second - time.monotonic()))

                async def partitions() -> None:
                    # storage away while recordings arrive; the receiver away once the
                    # uploads are through, so that their webhooks meet the partition
                    await at(2)
                    await asyncio.to_thread(storage_ns.partition, True)
                    await at(2 + PARTITION_SECS)
                    await asyncio.to_thread(storage_ns.partition, False)
                    await at(24)
                    await asyncio.to_thread(hooks_ns.partition, True)
                    await at(24 + PARTITION_SECS)
                    await asyncio.to_thread(hooks_ns.partition, False)

                await asyncio.gather(
                    ingest_all(api.url, env["CALLVAULT_INGEST_TOKEN"], batch, answers, ids),
                    partitions(),
                )
                assert len(ids) == RECORDINGS
                deadline = time.monotonic() + CONVERGE_WITHIN
                while True:
                    [row] = await query(
                        database_url,
                        """select
                             count(*) filter (where status = 'stored'
                                              and backend = 's3-generic') as stored,
                             count(*) filter (where default_store_key is not null) as staged,
                             (select count(*) from webhook_events
                               where status <> 'delivered') as open,
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
                    assert time.monotonic() < deadline, (
                        f"not converged: {dict(row)}\n{processes.logs()}"
                    )
                    await asyncio.sleep(0.5)
                figures["converged_secs"] = round(time.monotonic() - started, 1)
                [retries] = await query(
                    database_url,
                    "select (select count(*) from webhook_attempts) as webhook_requests, "
                    "(select count(*) from webhook_attempts where status_code is null) "
                    "as webhook_requests_failed",
                )
                figures.update({k: int(v) for k, v in dict(retries).items()})
                figures["upload_retries_logged"] = sum(
                    1
                    for i in worker.incarnations
                    for e in i.events()
                    if e.get("event") == "upload will be retried"
                )
                for process in processes.all:
                    await asyncio.to_thread(process.terminate)
        objects = {
            key: await read_object(seaweedfs, BUCKET, key)
            for key in await list_bucket(seaweedfs, BUCKET)
        }
    receiver.stop()

    figures["answers"] = dict(answers)
    delivered = Counter(d.event_id for d in receiver.received() if 200 <= d.answered < 300)
    figures["duplicate_events"] = sum(1 for n in delivered.values() if n > 1)
    print(f"\nnetwork fault test: {json.dumps(figures)}")
    assert not [s for s in answers if s >= 500 and s not in (503, 507)], answers
    # the receiver's partition did make rounds fail, and retries got them through
    assert int(figures["webhook_requests_failed"]) >= 1  # type: ignore[call-overload]
    # and a verified saved webhook for each
    assert len(batch) == RECORDINGS
    assert_all_landed(
        objects,
        {m["call_leg_id"]: audio for m, audio in batch},
        receiver.received(),
        account["webhook_public_key"],
        ids.values(),
    )
    assert files_under(shared_store) == []
    assert files_under(*(d for n, d in data_dirs.items() if n != "cli")) == []
