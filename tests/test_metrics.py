"""`GET /metrics` moves with the pipeline, and the logs name what they are about.

Counters are per process (this test process here), so each test compares the values it
scrapes before and after its own work, parsed with prometheus_client's own parser. The
pipeline runs for real: ingest over the API, a worker uploading to SeaweedFS (signatures
checked) and delivering to a webhook receiver.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.jobs import make_worker
from callvault.logs import configure_logging
from callvault.runtime import Runtime
from callvault.worker.runner import Worker
from tests.conftest import make_settings
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS, closed_port
from tests.worker.flow import (
    bearer,
    create_application,
    ingest,
    make_wav,
    new_bucket,
    s3_generic,
    set_credentials,
    store_in_new_bucket,
    wait_for_status,
    wait_until,
)

INGESTED = "callvault_recordings_ingested_total"
INGESTED_BYTES = "callvault_recording_bytes_ingested_total"
UPLOADS = "callvault_uploads_total"
UPLOAD_SECONDS_COUNT = "callvault_upload_duration_seconds_count"
WEBHOOK_ATTEMPTS = "callvault_webhook_attempts_total"
WEBHOOK_SECONDS_COUNT = "callvault_webhook_latency_seconds_count"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a scrape (0 when the series does not exist yet: a labelled
    counter appears with its first increment)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def scrape(api: httpx.AsyncClient) -> str:
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.fixture(autouse=True)
def fresh_backlog(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare the backlog gauges before and after their own work: no caching
    (tests/test_metrics_access.py tests the cache)."""
    monkeypatch.setitem(runtime.settings.environ, "CALLVAULT_METRICS_CACHE_SECS", "0")  # type: ignore[arg-type]


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    worker = make_worker(runtime, poll_seconds=0.1, webhook_schedule=(0.2, 0.4))
    await worker.start()
    yield worker
    await worker.stop()


async def custom_storage_connection(
    api: httpx.AsyncClient, account: NewAccount, seaweedfs: SeaweedFS, receiver: WebhookReceiver
) -> tuple[str, dict[str, Any]]:
    connection_id = await create_application(api, account.api_key, receiver.url())
    configuration = await store_in_new_bucket(api, account.api_key, connection_id, seaweedfs)
    return connection_id, configuration


async def test_ingest_counts_new_recordings_and_their_bytes_only(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    # no worker runs here: only ingest can move these counters
    connection_id = await create_application(api, account.api_key, "http://127.0.0.1:9/hooks")
    audio = make_wav(0.5)
    before = await scrape(api)

    recording_id, metadata = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    after = await scrape(api)
    assert sample(after, INGESTED) - sample(before, INGESTED) == 1
    assert sample(after, INGESTED_BYTES) - sample(before, INGESTED_BYTES) == len(audio)
    # the state gauges are read from the database at scrape time; a recording without custom
    # storage is stored at ingest (issue 14). (This asserted `received` >= 1, which held only
    # when an earlier test had left a received row behind.)
    stored = sample(after, "callvault_recordings", state="stored")
    assert stored - sample(before, "callvault_recordings", state="stored") == 1

    # the same recording again is answered (200) but not counted
    repeat = await api.post(
        "/internal/v1/recordings",
        files={
            "metadata": (None, json.dumps(metadata), "application/json"),
            "audio": ("recording.wav", audio, "audio/wav"),
        },
        headers=bearer(runtime.settings.ingest_token),
    )
    assert repeat.status_code == 200 and repeat.json()["data"]["id"] == recording_id
    again = await scrape(api)
    assert sample(again, INGESTED) == sample(after, INGESTED)
    assert sample(again, INGESTED_BYTES) == sample(after, INGESTED_BYTES)


async def test_an_upload_and_its_webhook_move_their_counters_and_histograms(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    worker: Worker,
) -> None:
    connection_id, _ = await custom_storage_connection(api, account, seaweedfs, webhook_receiver)
    before = await scrape(api)

    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.3))
    await wait_for_status(runtime, recording_id, "stored")
    await webhook_receiver.wait_for(1)

    async def counted() -> bool:
        # the attempt is counted once its outcome is committed, just after the receiver got it
        now = await scrape(api)
        return sample(now, WEBHOOK_ATTEMPTS, outcome="delivered") > sample(
            before, WEBHOOK_ATTEMPTS, outcome="delivered"
        )

    await wait_until(counted, what="the delivered webhook attempt counted")
    after = await scrape(api)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # at least: the worker also takes up rows other tests left due in the shared database
    assert moved(UPLOADS, backend="s3-generic", outcome="ok") >= 1
    assert moved(UPLOAD_SECONDS_COUNT, backend="s3-generic") >= 1
    assert moved(WEBHOOK_ATTEMPTS, outcome="delivered") >= 1
    assert moved(WEBHOOK_SECONDS_COUNT) >= 1
    assert moved(INGESTED) == 1  # only this test ingests


async def test_a_permanent_upload_failure_and_a_refused_webhook_are_counted_as_such(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    worker: Worker,
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    wrong = s3_generic(
        seaweedfs, new_bucket(seaweedfs), aws_secret_access_key="not-the-secret-" + "x" * 20
    )
    await set_credentials(api, account.api_key, connection_id, "s3-generic", wrong)
    webhook_receiver.answer(410, times=1)  # a 4xx other than 408/429: not retried
    before = await scrape(api)

    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.3))
    await wait_for_status(runtime, recording_id, "failed")
    await webhook_receiver.wait_for(1)

    async def counted() -> bool:
        now = await scrape(api)
        return sample(now, WEBHOOK_ATTEMPTS, outcome="failed") > sample(
            before, WEBHOOK_ATTEMPTS, outcome="failed"
        )

    await wait_until(counted, what="the refused webhook attempt counted")
    after = await scrape(api)
    assert (
        sample(after, UPLOADS, backend="s3-generic", outcome="permanent")
        - sample(before, UPLOADS, backend="s3-generic", outcome="permanent")
        >= 1
    )


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The product's structlog set-up (JSON: the sink is not a terminal), into a buffer."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        configure_logging(logging.INFO)  # PrintLoggerFactory binds sys.stderr as it is now
    # the product caches loggers on first use; here they must not outlive the buffer
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()


def log_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return lines


async def test_ingest_and_upload_log_json_lines_naming_the_recording_and_connection(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    worker: Worker,
) -> None:
    connection_id, configuration = await custom_storage_connection(
        api, account, seaweedfs, webhook_receiver
    )
    with json_logs() as buffer:
        recording_id, _ = await ingest(
            api, runtime.settings.ingest_token, connection_id, make_wav(0.3)
        )
        await wait_for_status(runtime, recording_id, "stored")
        await webhook_receiver.wait_for(1)

        async def delivered_logged() -> bool:
            return "webhook delivered" in buffer.getvalue()

        await wait_until(delivered_logged, what="the delivery logged")

    lines = [line for line in log_lines(buffer) if line.get("recording_id") == recording_id]
    events = {line["event"]: line for line in lines}
    for event in ("recording received", "upload started", "recording stored", "webhook delivered"):
        assert event in events, f"{event!r} not logged: {sorted(events)}"
        assert events[event]["connection_id"] == connection_id, event
        assert events[event]["level"] == "info" and "timestamp" in events[event]
    assert events["recording stored"]["location"] == "s3-generic"
    assert events["webhook delivered"]["event_type"] == "call.recording.saved"
    assert events["webhook delivered"]["status_codes"] == [200]
    assert events["webhook delivered"]["event_id"]

    text = buffer.getvalue()
    for secret in (
        configuration["aws_secret_access_key"],
        runtime.settings.ingest_token,
        account.api_key,
    ):
        assert secret not in text


async def test_metrics_answer_without_the_database_and_say_not_ready(tmp_path: Path) -> None:
    """The alert rules' inputs (deploy/prometheus/alerts.yml): /ready's verdict and the data
    dir's disk are on /metrics, and /metrics still answers while the database is away."""
    away = f"postgresql://postgres@127.0.0.1:{closed_port()}/callvault"
    runtime = Runtime.build(make_settings(tmp_path, away))
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cv.test") as client:
            scraped = await client.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        assert sample(scraped.text, "callvault_ready") == 0
        assert sample(scraped.text, "callvault_ready_check", check="database") == 0
        assert sample(scraped.text, "callvault_ready_check", check="default_store") == 1
        free = sample(scraped.text, "callvault_data_dir_free_bytes")
        assert 0 < free <= sample(scraped.text, "callvault_data_dir_size_bytes")
    finally:
        await runtime.close()


async def test_metrics_say_ready_when_both_answer(api: httpx.AsyncClient) -> None:
    scraped = await scrape(api)
    assert sample(scraped, "callvault_ready") == 1
    assert sample(scraped, "callvault_ready_check", check="database") == 1
