"""The worker and a body corrupted on its way to Azure or GCS (issue 14): the store (or
put_file) refuses the upload, the worker retries it as a transient failure, and the recording
is announced once, after the clean upload, with its bytes intact in the customer's bucket.
(The storage-level proof per backend and size is tests/storage/test_upload_integrity.py.)"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.db import utcnow
from callvault.runtime import Runtime
from callvault.storage.factory import open_custom_store
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.servers import ByteFlipProxy
from tests.storage.environment import set_storage_env
from tests.worker.flow import (
    create_application,
    ingest,
    make_wav,
    recording_row,
    set_credentials,
    update_recording,
    wait_for_status,
    wait_until,
)


def behind_proxy(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[ByteFlipProxy, dict[str, Any]]:
    """A flipping proxy in front of the backend's server, the process pointed at it, and a
    configuration for a new bucket there."""
    bucket = f"flip-{secrets.token_hex(6)}"
    if name == "azure":
        azurite = request.getfixturevalue("azurite")
        azurite.create_container(bucket)
        target = urlsplit(azurite.endpoint)
        configuration = {
            "bucket": bucket,
            "account_name": azurite.account_name,
            "account_key": azurite.account_key,
        }
    else:
        request.getfixturevalue("fake_gcs").create_bucket(bucket)
        target = urlsplit(request.getfixturevalue("gcs_gateway").endpoint)
        account = request.getfixturevalue("gcs_service_account")
        configuration = {"bucket": bucket, "credentials": account.json}
    assert target.hostname is not None and target.port is not None
    proxy = ByteFlipProxy(target.hostname, target.port, offset=4096)
    if name == "azure":
        set_storage_env(
            monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", f"{proxy.endpoint}/{{account_name}}"
        )
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
    return proxy, configuration


@pytest.mark.parametrize("name", ["azure", "gcs"])
async def test_a_corrupted_upload_is_retried_and_announced_once_intact(
    name: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    proxy, configuration = behind_proxy(name, request, monkeypatch)
    with proxy:
        connection_id = await create_application(api, account.api_key, webhook_receiver.url())
        await set_credentials(api, account.api_key, connection_id, name, configuration)
        audio = make_wav(1.0)
        proxy.arm(1)
        await start_worker()
        recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)

        async def failed_once() -> bool:
            return (await recording_row(runtime, recording_id)).attempts >= 1

        await wait_until(failed_once, within=20, what="the corrupted upload refused")
        assert proxy.flipped == 1
        row = await recording_row(runtime, recording_id)
        assert row.status == "received"
        assert row.error_detail and "the upload arrived corrupted" in row.error_detail
        assert webhook_receiver.received() == []  # nothing announced for the refused upload

        # the backoff's next attempt, now: the clean upload lands and is announced once
        await update_recording(runtime, recording_id, next_attempt_at=utcnow())
        [saved] = await webhook_receiver.wait_for(1, within=20)
        assert saved.event_type == "call.recording.saved", saved.body
        row = await wait_for_status(runtime, recording_id, "stored")
        store = open_custom_store(name, configuration, allow_private_networks=True)
        held = b"".join([chunk async for chunk in store.get_stream(f"{row.object_key}")])
        assert held == audio
        assert proxy.flipped == 1
