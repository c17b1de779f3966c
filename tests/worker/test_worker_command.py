"""`callvault worker` runs until SIGTERM/SIGINT and then stops cleanly; with --metrics-port it
serves its own Prometheus metrics (issue 26); every line it logs is one JSON object."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.config import load_settings
from callvault.db import migrate_async, transaction
from callvault.runtime import Runtime
from tests.conftest import free_port, make_settings
from tests.faults.cluster import clean_environment
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    create_application,
    ingest,
    make_wav,
    store_in_new_bucket,
    wait_until,
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env["CALLVAULT_DATA_DIR"] = str(tmp_path)
    # a data dir as `callvault serve` makes it (key, token), its database not migrated yet:
    # the worker migrates the embedded database itself; it never makes a data dir
    load_settings(env, data_dir_rule="create")
    process = subprocess.Popen(
        [sys.executable, "-m", "callvault", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the embedded database is migrated and the worker logs that it started
        deadline = time.monotonic() + 20
        assert process.stderr is not None
        started = ""
        while "worker started" not in started:
            line = process.stderr.readline()
            assert line or process.poll() is None, started
            started += line
            assert time.monotonic() < deadline, started
        process.send_signal(signum)
        _, rest = process.communicate(timeout=20)
        assert process.returncode == 0, started + rest
        assert "worker stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_worker_metrics_after_one_upload(
    tmp_path: Path, seaweedfs: SeaweedFS, webhook_receiver: WebhookReceiver
) -> None:
    """A scaled-out worker's own /metrics: after one custom-storage upload and its webhook, it
    shows callvault_uploads_total and webhook latency samples (the API's /metrics cannot: the
    counters are per process). Its log is JSON lines only."""
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'callvault.db'}")
    await migrate_async(settings.database_url)
    runtime = Runtime.build(settings)
    port = free_port()
    env = clean_environment(
        CALLVAULT_DATA_DIR=str(settings.data_dir),
        CALLVAULT_DATABASE_URL=settings.database_url,
        CALLVAULT_ENCRYPTION_KEYS=",".join(settings.encryption_keys_b64),
        CALLVAULT_INGEST_TOKEN=settings.ingest_token,
        CALLVAULT_METRICS_PORT=str(port),
        CALLVAULT_WEBHOOK_SCHEDULE="0.5,1",
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "callvault", "worker"],
            env=env,
            stdout=log,
            stderr=log,
        )
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cv.test") as api:
            async with transaction(runtime.sessions) as session:
                account = await create_account(session, settings.keyring, "metrics")
            connection_id = await create_application(api, account.api_key, webhook_receiver.url())
            await store_in_new_bucket(api, account.api_key, connection_id, seaweedfs)
            await ingest(api, settings.ingest_token, connection_id, make_wav(seconds=0.2))
            await webhook_receiver.wait_for(1, within=30)

        metrics_url = f"http://127.0.0.1:{port}/metrics"

        async def shows_the_upload_and_the_webhook() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    text = (await client.get(metrics_url)).text
            except httpx.HTTPError:
                return False
            return (
                'callvault_uploads_total{backend="s3-generic",outcome="ok"} 1.0' in text
                and "callvault_webhook_latency_seconds_count 1.0" in text
            )

        await wait_until(shows_the_upload_and_the_webhook, within=20, what="worker metrics")
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)
        await runtime.close()
    lines = log_path.read_text().splitlines()
    assert lines
    for line in lines:
        json.loads(line)  # every line is one JSON object
