"""The whole flow over real HTTP, per backend and webhook API version: ingest into a running
`callvault serve` (LiveServer: API + worker), the signed webhook on a real receiver, verified
with the official Telnyx SDK, every payload field checked, and the bytes read back from where
the webhook says they are (the customer's bucket on a real server, or the signed link)."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.storage.factory import open_custom_store
from callvault.webhooks.payloads import timestamp
from tests.conftest import LiveServer, conforms_to_spec
from tests.receiver import WebhookReceiver
from tests.servers import Azurite, GcsAuthGateway, SeaweedFS, ServiceAccount
from tests.worker.flow import create_application, ingest, make_wav, set_credentials

BACKENDS = ["default", "s3", "s3-generic", "azure", "gcs"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SAVED_FIELDS = {
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "channels",
    "client_state",
    "connection_id",
    "end_time",
    "format",
    "public_recording_urls",
    "recording_ended_at",
    "recording_id",
    "recording_started_at",
    "recording_urls",
    "start_time",
}


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live_server.url, timeout=10, event_hooks={"response": [conforms_to_spec]}
    ) as http:
        yield http


def seed_timestamp(iso: str) -> str:
    """'2024-05-17T09:30:12.345Z' → the seed's form with six fractional digits."""
    return timestamp(datetime.fromisoformat(iso))


def storage_for(backend: str, request: pytest.FixtureRequest) -> tuple[dict[str, Any], str]:
    """(configuration, canonical URL prefix) on a real server, in a fresh bucket."""
    bucket = f"e2e-{secrets.token_hex(6)}"
    if backend in ("s3", "s3-generic"):
        s3: SeaweedFS = request.getfixturevalue("seaweedfs")
        s3.create_bucket(bucket)
        config = {
            "bucket": bucket,
            "region": s3.region,
            "aws_access_key_id": s3.access_key,
            "aws_secret_access_key": s3.secret_key,
        }
        if backend == "s3":
            request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL", s3.endpoint)
            return config, f"s3://{bucket}/"
        return {**config, "endpoint": s3.endpoint}, f"{s3.endpoint}/{bucket}/"
    if backend == "azure":
        azurite: Azurite = request.getfixturevalue("azure_endpoint_env")
        azurite.create_container(bucket)
        config = {
            "bucket": bucket,
            "account_name": azurite.account_name,
            "account_key": azurite.account_key,
        }
        return config, f"{azurite.endpoint}/{bucket}/"
    assert backend == "gcs"
    request.getfixturevalue("gcs_emulator_env")
    gateway: GcsAuthGateway = request.getfixturevalue("gcs_gateway")
    request.getfixturevalue("fake_gcs").create_bucket(bucket)
    account: ServiceAccount = request.getfixturevalue("gcs_service_account")
    assert gateway.endpoint
    return {"bucket": bucket, "credentials": account.json}, f"gs://{bucket}/"


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_recording_reaches_its_place_and_the_webhook_says_where(
    backend: str,
    version: str,
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    connection_id = await create_application(
        client, account.api_key, webhook_receiver.url(), api_version=version
    )
    configuration: dict[str, Any] | None = None
    prefix = ""
    if backend != "default":
        configuration, prefix = storage_for(backend, request)
        await set_credentials(client, account.api_key, connection_id, backend, configuration)
    audio = make_wav(0.6, channels=2)
    client_state = "aGF2ZSBhIG5pY2UgZGF5ID1d"
    recording_id, sent = await ingest(
        client,
        live_server.settings.ingest_token,
        connection_id,
        audio,
        channels="dual",
        client_state=client_state,
    )

    [delivery] = await webhook_receiver.wait_for(1, within=20)
    event = webhook_receiver.verify(delivery, account.webhook_public_key)  # the SDK's unwrap
    assert event is not None
    body = delivery.json()
    if version == "1":
        assert set(body) == {"created_at", "event_type", "payload", "record_type", "webhook_id"}
        assert body["event_type"] == "recording_saved" and body["record_type"] == "event"
        assert TIMESTAMP.match(body["created_at"])
        uuid.UUID(body["webhook_id"])
        payload = body["payload"]
        assert set(payload) == SAVED_FIELDS | {"occurred_at"}
        assert TIMESTAMP.match(payload["occurred_at"])
    else:
        assert set(body) == {"data", "meta"}
        assert body["meta"] == {"attempt": 1, "delivered_to": webhook_receiver.url()}
        data = body["data"]
        assert set(data) == {"event_type", "id", "occurred_at", "payload", "record_type"}
        assert data["event_type"] == "call.recording.saved" and data["record_type"] == "event"
        assert TIMESTAMP.match(data["occurred_at"])
        uuid.UUID(data["id"])
        payload = data["payload"]
        assert set(payload) == SAVED_FIELDS
    started, ended = (
        seed_timestamp(sent[k]) for k in ("recording_started_at", "recording_ended_at")
    )
    assert payload == {
        **payload,
        "call_control_id": sent["call_control_id"],
        "call_leg_id": sent["call_leg_id"],
        "call_session_id": sent["call_session_id"],
        "channels": "dual",
        "client_state": client_state,
        "connection_id": connection_id,
        "end_time": ended,
        "format": "wav",
        "public_recording_urls": {},
        "recording_ended_at": ended,
        "recording_id": recording_id,
        "recording_started_at": started,
        "start_time": started,
    }
    [(fmt, url)] = payload["recording_urls"].items()
    assert fmt == "wav"
    day = sent["recording_started_at"][:10]
    seconds = int(datetime.fromisoformat(sent["recording_started_at"]).timestamp())
    key = f"{account.account_id}/{day}/{sent['call_leg_id']}-{seconds}"

    if backend == "default":
        # a signed link to callvault itself, valid 600 s, serving the very bytes
        assert url.startswith(f"{live_server.url}/")
        response = await client.get(url)
        assert response.status_code == 200
        assert response.content == audio
    else:
        assert configuration is not None
        assert url == prefix + key  # no extension in custom storage, as the seed shows
        store = open_custom_store(backend, configuration, allow_private_networks=True)
        stored = b"".join([chunk async for chunk in store.get_stream(key)])
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(audio).hexdigest()
        info = await store.head(key)
        assert info is not None and info.size == len(audio)
        assert info.metadata.get("sha256") == hashlib.sha256(audio).hexdigest()
