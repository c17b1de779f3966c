"""Encrypted recordings over real HTTP on real servers, per backend and webhook API version:
`callvault serve` (API + worker), the signed webhook on the real receiver, the bytes read back
from SeaweedFS (s3-generic), Azurite, fake-gcs-server or the default store's signed link, and
decrypted with nothing but `cryptography`, the private key and the details — from the webhook
(v2) or the Recordings API (v1: its payload keeps the seed's exact shape), and separately from
the stored object's own metadata."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidTag

from callvault.accounts.service import NewAccount
from callvault.encryption_keys.scheme import ALGORITHM
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.storage.factory import open_custom_store
from tests.conftest import LiveServer, auth
from tests.encryption.customer import customer_decrypt
from tests.encryption.keys import register_key, rsa_private, use_key
from tests.encryption.samples import files_holding, noisy_wav
from tests.receiver import WebhookReceiver
from tests.test_end_to_end import storage_for
from tests.worker.flow import create_application, ingest, set_credentials

BACKENDS = ["default", "s3-generic", "azure", "gcs"]
DETAIL_FIELDS = {
    "algorithm",
    "public_key_id",
    "fingerprint",
    "encrypted_cek",
    "iv",
    # format 2 (issue 21): the object is bound to its recording
    "version",
    "recording_id",
}


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=20) as http:
        yield http


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_encrypted_recording_end_to_end(
    backend: str,
    version: str,
    request: pytest.FixtureRequest,
    live_server: LiveServer,
    runtime: Runtime,
    client: httpx.AsyncClient,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    connection_id = await create_application(
        client, account.api_key, webhook_receiver.url(), api_version=version
    )
    key = await register_key(client, account.api_key, rsa_private())
    await use_key(client, account.api_key, connection_id, key["id"])
    configuration: dict[str, Any] | None = None
    if backend != "default":
        configuration, _ = storage_for(backend, request)
        await set_credentials(client, account.api_key, connection_id, backend, configuration)
    audio = noisy_wav(80)  # 1.28 MB: more than one chunk through the encryptor
    recording_id, sent = await ingest(
        client, live_server.settings.ingest_token, connection_id, audio
    )

    [delivery] = await webhook_receiver.wait_for(1, within=30)
    assert webhook_receiver.verify(delivery, account.webhook_public_key) is not None
    body = delivery.json()
    shown = await client.get(f"/v2/recordings/{recording_id}", headers=auth(account))
    api_details = shown.json()["data"]["encryption_details"]
    assert set(api_details) == DETAIL_FIELDS
    if version == "2":
        payload = body["data"]["payload"]
        details = payload["encryption_details"]
        assert details == api_details
    else:
        payload = body["payload"]
        assert "encryption_details" not in payload  # v1: the seed's exact shape
        details = api_details
    assert details["algorithm"] == ALGORITHM
    assert details["public_key_id"] == key["id"]
    assert details["fingerprint"] == key["fingerprint"]
    assert details["version"] == "2" and details["recording_id"] == recording_id

    [(fmt, url)] = payload["recording_urls"].items()
    assert fmt == "wav"
    if backend == "default":
        response = await client.get(url)
        assert response.status_code == 200
        stored = response.content
        async with runtime.sessions() as session:
            row = await session.get(Recording, recording_id)
        assert row is not None and row.default_store_key
        info = await runtime.default_store.head(row.default_store_key)
    else:
        assert configuration is not None
        day = sent["recording_started_at"][:10]
        seconds = int(datetime.fromisoformat(sent["recording_started_at"]).timestamp())
        object_key = f"{account.account_id}/{day}/{sent['call_leg_id']}-{seconds}"
        store = open_custom_store(backend, configuration, allow_private_networks=True)
        stored = b"".join([chunk async for chunk in store.get_stream(object_key)])
        info = await store.head(object_key)
    assert info is not None

    # the bucket holds ciphertext, verified as such by the pipeline (size and sha256)
    assert stored != audio and len(stored) == len(audio) + 16
    assert audio[1000:1032] not in stored
    assert shown.json()["data"]["sha256"] == hashlib.sha256(stored).hexdigest()
    assert info.size == len(stored)
    assert info.metadata.get("sha256") == hashlib.sha256(stored).hexdigest()

    # the customer decrypts with the webhook's (or the API's) details...
    assert customer_decrypt(rsa_private(), details, stored) == audio
    # ...and, separately, with nothing but the object's own metadata
    meta = info.metadata
    assert meta["public_key_id"] == key["id"]
    assert meta["encryption_version"] == "2" and meta["recording_id"] == recording_id
    assert customer_decrypt(rsa_private(), meta, stored) == audio

    with pytest.raises(ValueError):
        customer_decrypt(rsa_private(2048, which=1), details, stored)
    flipped = bytearray(stored)
    flipped[-100] ^= 0x80
    with pytest.raises(InvalidTag):
        customer_decrypt(rsa_private(), details, bytes(flipped))

    # the platform kept no plaintext anywhere in its data dir
    assert files_holding(live_server.settings.data_dir, audio) == []
