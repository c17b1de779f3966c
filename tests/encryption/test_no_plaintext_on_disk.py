"""With encryption on, no file under the data dir ever holds the plaintext audio: scanned while
a slow media server is still sending it (the partial temp file in `incoming/`), while the upload
to the customer's bucket is being retried, and after a permanent custom-storage failure (the
recording kept in the default store). `callvault serve` on a real port, SeaweedFS for S3."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from tests.conftest import LiveServer
from tests.encryption.keys import register_key, rsa_private, use_key
from tests.encryption.samples import files_holding, noisy_wav
from tests.receiver import WebhookReceiver
from tests.recordings.conftest import BOUNDARY, CONTENT_TYPE, multipart_body
from tests.servers import SeaweedFS, closed_port
from tests.worker.flow import (
    bearer,
    create_application,
    ingest,
    ingest_metadata,
    recording_row,
    set_credentials,
    wait_for_status,
    wait_until,
)


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        yield http


async def encrypted_application(
    client: httpx.AsyncClient, account: NewAccount, receiver: WebhookReceiver
) -> str:
    connection_id = await create_application(client, account.api_key, receiver.url())
    key = await register_key(client, account.api_key, rsa_private())
    await use_key(client, account.api_key, connection_id, key["id"])
    return connection_id


def incoming_bytes(live_server: LiveServer) -> int:
    incoming = live_server.settings.data_dir / "incoming"
    total = 0
    for path in incoming.glob("*") if incoming.exists() else []:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


async def test_no_plaintext_while_a_slow_media_server_is_still_sending(
    live_server: LiveServer,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    connection_id = await encrypted_application(client, account, webhook_receiver)
    audio = noisy_wav(200)  # 3.2 MB: three 1 MiB writes while the body is still arriving
    body = multipart_body(
        [
            ("metadata", json.dumps(ingest_metadata(connection_id)).encode(), None),
            ("audio", audio, "recording.wav"),
        ]
    )
    assert BOUNDARY.encode() in body
    chunk = 256 * 1024
    scans: list[list[str]] = []
    partial_sizes: list[int] = []

    async def first_write_landed() -> bool:
        return incoming_bytes(live_server) > 0

    async def slow_body() -> AsyncIterator[bytes]:
        sent = 0
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            yield piece
            sent += len(piece)
            if sent > 1024 * 1024 + 4096 and sent < len(body) - chunk:
                if not partial_sizes:
                    # the server writes in 1 MiB steps: wait for the first one to land
                    await wait_until(first_write_landed, within=20, what="a partial file")
                partial_sizes.append(incoming_bytes(live_server))
                scans.append(files_holding(live_server.settings.data_dir, audio))

    response = await client.post(
        "/internal/v1/recordings",
        content=slow_body(),
        headers={"Content-Type": CONTENT_TYPE, **bearer(live_server.settings.ingest_token)},
    )
    assert response.status_code == 202, response.text
    assert any(size > 0 for size in partial_sizes), partial_sizes  # a partial file was seen
    assert scans and all(found == [] for found in scans), scans
    assert files_holding(live_server.settings.data_dir, audio) == []


async def test_no_plaintext_while_the_upload_is_retried_nor_after_a_permanent_failure(
    live_server: LiveServer,
    runtime: Runtime,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    seaweedfs: SeaweedFS,
) -> None:
    data_dir = live_server.settings.data_dir
    # transient: nothing listens at the endpoint, so the worker keeps retrying
    retrying = await encrypted_application(client, account, webhook_receiver)
    await set_credentials(
        client,
        account.api_key,
        retrying,
        "s3-generic",
        {
            "bucket": "nowhere",
            "region": seaweedfs.region,
            "aws_access_key_id": seaweedfs.access_key,
            "aws_secret_access_key": seaweedfs.secret_key,
            "endpoint": f"http://127.0.0.1:{closed_port()}",
        },
    )
    audio_retried = noisy_wav(20)
    retried_id, _ = await ingest(client, live_server.settings.ingest_token, retrying, audio_retried)

    async def attempted() -> bool:
        return (await recording_row(runtime, retried_id)).attempts >= 1

    await wait_until(attempted, within=30, what="a failed upload attempt")
    row = await recording_row(runtime, retried_id)
    assert row.status == "received" and row.encryption_details is not None
    assert files_holding(data_dir, audio_retried) == []

    # permanent: the bucket does not exist; the recording stays in the default store
    failing = await encrypted_application(client, account, webhook_receiver)
    await set_credentials(
        client,
        account.api_key,
        failing,
        "s3-generic",
        {
            "bucket": f"missing-{secrets.token_hex(6)}",
            "region": seaweedfs.region,
            "aws_access_key_id": seaweedfs.access_key,
            "aws_secret_access_key": seaweedfs.secret_key,
            "endpoint": seaweedfs.endpoint,
        },
    )
    audio_failed = noisy_wav(20)
    failed_id, _ = await ingest(client, live_server.settings.ingest_token, failing, audio_failed)
    failed = await wait_for_status(runtime, failed_id, "failed", within=30)
    assert failed.default_store_key and failed.encryption_details is not None
    kept = runtime.default_store
    assert (await kept.head(failed.default_store_key)) is not None
    assert files_holding(data_dir, audio_failed) == []
    assert files_holding(data_dir, audio_retried) == []
