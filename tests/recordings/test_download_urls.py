"""download_urls of recordings in customers' buckets: presigned with the stored credentials,
fetched with a plain HTTP client from the real servers (SeaweedFS for s3 and s3-generic,
Azurite, fake-gcs-server behind its signature-checking gateway); tampered and expired links
are refused by the servers that check them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.storage.factory import open_custom_store
from tests.conftest import LiveServer, conforms_to_spec
from tests.receiver import WebhookReceiver
from tests.test_end_to_end import storage_for
from tests.worker.flow import bearer, create_application, ingest, make_wav, set_credentials

CUSTOM_BACKENDS = ["s3", "s3-generic", "azure", "gcs"]
SIGNATURE_PARAMS = {"X-Amz-Signature", "sig", "X-Goog-Signature"}


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live_server.url, timeout=20, event_hooks={"response": [conforms_to_spec]}
    ) as http:
        yield http


def tampered(url: str) -> str:
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    changed = []
    for name, value in params:
        if name in SIGNATURE_PARAMS:
            flipped = "0" if value[-2] != "0" else "1"
            value = value[:-2] + flipped + value[-1]
        changed.append((name, value))
    assert changed != params, "no signature parameter found"
    return urlunsplit(parts._replace(query=urlencode(changed)))


def lifetime_seconds(url: str) -> float:
    params = dict(parse_qsl(urlsplit(url).query))
    if "X-Amz-Expires" in params:
        return float(params["X-Amz-Expires"])
    if "X-Goog-Expires" in params:
        return float(params["X-Goog-Expires"])
    expiry = datetime.fromisoformat(params["se"].replace("Z", "+00:00"))
    return (expiry - datetime.now(UTC)).total_seconds()


async def stored_recording(
    client: httpx.AsyncClient, account: NewAccount, recording_id: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        response = await client.get(
            f"/v2/recordings/{recording_id}", headers=bearer(account.api_key)
        )
        data: dict[str, Any] = response.json()["data"]
        if data["storage"]["location"] == "custom":
            return data
        assert data["storage"]["state"] != "failed", data["storage"]
        assert time.monotonic() < deadline, "recording not stored in the customer's bucket"
        await _pause()


async def _pause() -> None:
    await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend", CUSTOM_BACKENDS)
async def test_download_urls_are_presigned_links_a_plain_get_downloads(
    backend: str,
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    connection_id = await create_application(client, account.api_key, webhook_receiver.url())
    configuration, canonical_prefix = storage_for(backend, request)
    await set_credentials(client, account.api_key, connection_id, backend, configuration)
    audio = make_wav(0.5)
    recording_id, _ = await ingest(client, live_server.settings.ingest_token, connection_id, audio)

    data = await stored_recording(client, account, recording_id)
    link = data["download_urls"]["wav"]
    assert (
        link.startswith("http") and SIGNATURE_PARAMS & dict(parse_qsl(urlsplit(link).query)).keys()
    )
    assert 590 <= lifetime_seconds(link) <= 601
    # the webhook keeps the canonical form
    [delivery] = await webhook_receiver.wait_for(1, within=20)
    assert delivery.payload["recording_urls"]["wav"].startswith(canonical_prefix)

    async with httpx.AsyncClient(timeout=20) as plain:  # no credentials, no SDK
        downloaded = await plain.get(link)
        assert downloaded.status_code == 200, downloaded.text[:300]
        assert downloaded.content == audio
        refused = await plain.get(tampered(link))
        assert refused.status_code in (401, 403), refused.status_code

        # an expired link (the same signing path, one second of life) is refused
        key = urlsplit(link).path.split(f"/{configuration['bucket']}/", 1)[1]
        store = open_custom_store(backend, configuration, allow_private_networks=True)
        short = await store.signed_get_url(unquote(key), 1)
        deadline = time.monotonic() + 15
        while (await plain.get(short)).status_code == 200:
            assert time.monotonic() < deadline, "an expired link still downloads"
            await _pause()


async def test_no_link_once_the_credentials_point_elsewhere(
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    connection_id = await create_application(client, account.api_key, webhook_receiver.url())
    configuration, _ = storage_for("s3-generic", request)
    await set_credentials(client, account.api_key, connection_id, "s3-generic", configuration)
    recording_id, _ = await ingest(
        client, live_server.settings.ingest_token, connection_id, make_wav(0.2)
    )
    await stored_recording(client, account, recording_id)
    other, _ = storage_for("s3-generic", request)
    response = await client.put(
        f"/v2/custom_storage_credentials/{connection_id}",
        json={"backend": "s3-generic", "configuration": other},
        headers=bearer(account.api_key),
    )
    assert response.status_code == 200, response.text
    got = await client.get(f"/v2/recordings/{recording_id}", headers=bearer(account.api_key))
    # never a link into the new bucket, never a non-HTTP URL
    assert got.json()["data"]["download_urls"] == {}
