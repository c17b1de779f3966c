"""Uploads to custom storage (SeaweedFS), permanent and transient failures, new credentials,
redelivery and the staging-copy sweep."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from callvault.accounts.service import NewAccount
from callvault.db import utcnow
from callvault.recordings.pipeline import sweep_staging_copies
from callvault.runtime import Runtime
from callvault.storage.factory import open_custom_store
from callvault.storage.local import LocalStore
from callvault.worker.runner import Worker
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS, closed_port
from tests.worker.flow import (
    bearer,
    create_application,
    events_for,
    ingest,
    insert_recording,
    make_wav,
    new_bucket,
    recording_row,
    s3_generic,
    set_credentials,
    update_recording,
    wait_for_status,
    wait_until,
)

AUTH_REASON = "Failed to authorize with storage using custom credentials"


async def read_back(backend: str, configuration: dict[str, Any], key: str) -> bytes:
    store = open_custom_store(backend, configuration, allow_private_networks=True)
    return b"".join([chunk async for chunk in store.get_stream(key)])


def staged_path(runtime: Runtime, key: str):  # type: ignore[no-untyped-def]
    store = runtime.default_store
    assert isinstance(store, LocalStore)
    return store.path_for(key)


async def test_upload_verified_and_staging_copy_removed(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    bucket = new_bucket(seaweedfs)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    configuration = s3_generic(seaweedfs, bucket)
    await set_credentials(api, account.api_key, connection_id, "s3-generic", configuration)
    audio = make_wav(0.4)
    await start_worker()
    recording_id, metadata = await ingest(
        api, runtime.settings.ingest_token, connection_id, audio, custom_file_name="my-call"
    )
    [delivery] = await webhook_receiver.wait_for(1)
    row = await recording_row(runtime, recording_id)
    assert row.status == "stored" and row.backend == "s3-generic" and row.bucket == bucket
    assert row.object_key is not None and row.object_key.endswith(
        f"/my-call-{int(row.recording_started_at.timestamp())}"
    )
    assert row.credentials_revision == 1
    url = f"{seaweedfs.endpoint}/{bucket}/{row.object_key}"
    assert delivery.payload["recording_urls"] == {"wav": url} and row.recording_url == url
    assert await read_back("s3-generic", configuration, row.object_key) == audio
    info = await open_custom_store("s3-generic", configuration, allow_private_networks=True).head(
        row.object_key
    )
    assert info is not None and info.content_type == "audio/wav"
    assert info.metadata["sha256"] == hashlib.sha256(audio).hexdigest()
    assert info.metadata["recording_id"] == recording_id
    assert info.metadata["call_leg_id"] == metadata["call_leg_id"]
    assert info.metadata["connection_id"] == connection_id

    async def staging_gone() -> bool:
        return (await recording_row(runtime, recording_id)).default_store_key is None

    staging_key = f"{row.default_store_key}"
    await wait_until(staging_gone, what="staging copy removed")
    assert not staged_path(runtime, staging_key).exists()


async def fail_on_a_wrong_secret(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> tuple[str, str, str, dict[str, Any], bytes, Any]:
    """A connection with a wrong secret and one recording whose error webhook has arrived:
    (bucket, connection_id, recording_id, ingest metadata, audio, error delivery)."""
    bucket = new_bucket(seaweedfs)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    wrong = s3_generic(seaweedfs, bucket, aws_secret_access_key="not-the-secret-" + "x" * 20)
    await set_credentials(api, account.api_key, connection_id, "s3-generic", wrong)
    audio = make_wav(0.3)
    await start_worker()
    recording_id, metadata = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
    [error] = await webhook_receiver.wait_for(1)
    assert error.event_type == "call.recording.error"
    return bucket, connection_id, recording_id, metadata, audio, error


async def test_wrong_secret_fails_then_replaced_credentials_deliver(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    bucket, connection_id, recording_id, metadata, audio, error = await fail_on_a_wrong_secret(
        api, runtime, account, seaweedfs, webhook_receiver, start_worker
    )
    webhook_receiver.verify(error, account.webhook_public_key)
    assert error.payload["reason"] == AUTH_REASON
    assert "s3-generic" in error.payload["detail"] and bucket in error.payload["detail"]
    assert "not-the-secret" not in error.body
    assert {k: error.payload[k] for k in ("call_leg_id", "connection_id", "recording_id")} == {
        "call_leg_id": metadata["call_leg_id"],
        "connection_id": connection_id,
        "recording_id": recording_id,
    }
    row = await recording_row(runtime, recording_id)
    assert row.status == "failed" and row.error_reason == AUTH_REASON
    assert row.credentials_revision == 1 and row.default_store_key is not None
    assert staged_path(runtime, row.default_store_key).read_bytes() == audio  # nothing lost

    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "s3-generic",
        s3_generic(seaweedfs, bucket),
        replace=True,
    )
    [_, saved] = await webhook_receiver.wait_for(2)
    assert saved.event_type == "call.recording.saved"
    row = await wait_for_status(runtime, recording_id, "stored")
    assert row.credentials_revision == 2 and row.error_reason is None
    assert saved.payload["recording_urls"] == {"wav": row.recording_url}
    assert (
        await read_back("s3-generic", s3_generic(seaweedfs, bucket), f"{row.object_key}") == audio
    )

    async def staging_gone() -> bool:
        return (await recording_row(runtime, recording_id)).default_store_key is None

    await wait_until(staging_gone, what="staging copy removed")


async def test_missing_bucket_then_redeliver(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    other_account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    bucket = f"rec-{secrets.token_hex(6)}"  # not created yet
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    configuration = s3_generic(seaweedfs, bucket)
    await set_credentials(api, account.api_key, connection_id, "s3-generic", configuration)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    [error] = await webhook_receiver.wait_for(1)
    assert error.payload["reason"] == AUTH_REASON  # the closest reason in the spec's list
    assert bucket in error.payload["detail"]
    await wait_for_status(runtime, recording_id, "failed")

    path = f"/v2/recordings/{recording_id}/actions/redeliver"
    assert (await api.post(path, headers=bearer(other_account.api_key))).status_code == 404
    missing = "/v2/recordings/00000000-0000-4000-8000-000000000000/actions/redeliver"
    assert (await api.post(missing, headers=bearer(account.api_key))).status_code == 404

    seaweedfs.create_bucket(bucket)
    response = await api.post(path, headers=bearer(account.api_key))
    assert response.status_code == 202, response.text
    assert response.json()["data"] == {
        "id": recording_id,
        "record_type": "recording",
        "status": "received",
    }
    [_, saved] = await webhook_receiver.wait_for(2)
    assert saved.event_type == "call.recording.saved"
    row = await wait_for_status(runtime, recording_id, "stored")
    assert saved.payload["recording_urls"]["wav"].startswith(f"{seaweedfs.endpoint}/{bucket}/")

    # in the customer's bucket now: nothing to redeliver
    response = await api.post(path, headers=bearer(account.api_key))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["code"] == "10015"
    assert row.backend == "s3-generic"


async def test_redeliver_in_progress_and_default_store_recordings(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    # not processed yet (no worker runs): in progress
    waiting = await insert_recording(runtime, account.account_id, connection_id)
    waiting_path = f"/v2/recordings/{waiting}/actions/redeliver"
    assert (await api.post(waiting_path, headers=bearer(account.api_key))).status_code == 422
    await update_recording(runtime, waiting, status="deleted")  # no bytes: not for the worker
    # without custom storage a recording is stored at ingest (issue 14), its webhook pending
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    path = f"/v2/recordings/{recording_id}/actions/redeliver"
    await start_worker()
    [first] = await webhook_receiver.wait_for(1)
    await wait_for_status(runtime, recording_id, "stored")
    # kept in the default store: redelivery sends a new saved event with a fresh link
    assert (await api.post(path, headers=bearer(account.api_key))).status_code == 202
    [_, second] = await webhook_receiver.wait_for(2)
    assert second.event_id != first.event_id
    assert second.payload["recording_id"] == recording_id
    assert len(await events_for(runtime, recording_id)) == 2


async def test_transient_failures_back_off_and_new_credentials_retry_at_once(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    bucket = new_bucket(seaweedfs)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    down = s3_generic(seaweedfs, bucket, endpoint=f"http://127.0.0.1:{closed_port()}")
    await set_credentials(api, account.api_key, connection_id, "s3-generic", down)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))

    async def failed_once() -> bool:
        return (await recording_row(runtime, recording_id)).attempts >= 1

    await wait_until(failed_once, within=20, what="a transient failure")
    row = await recording_row(runtime, recording_id)
    assert row.status == "received" and row.first_failure_at is not None
    assert row.next_attempt_at is not None and row.next_attempt_at > row.first_failure_at
    assert row.error_detail and "s3-generic" in row.error_detail
    assert webhook_receiver.received() == []  # transient failures send nothing

    # hold it back: new credentials must take it up at once, not after the backoff
    await update_recording(runtime, recording_id, next_attempt_at=utcnow() + timedelta(hours=1))
    await set_credentials(
        api,
        account.api_key,
        connection_id,
        "s3-generic",
        s3_generic(seaweedfs, bucket),
        replace=True,
    )
    [saved] = await webhook_receiver.wait_for(1, within=10)
    assert saved.event_type == "call.recording.saved"
    await wait_for_status(runtime, recording_id, "stored")


async def test_transient_failures_become_permanent_after_a_day(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    connection_id = await create_application(
        api, account.api_key, webhook_receiver.url(), api_version="1"
    )
    down = s3_generic(seaweedfs, "rec-down", endpoint=f"http://127.0.0.1:{closed_port()}")
    await set_credentials(api, account.api_key, connection_id, "s3-generic", down)
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    await update_recording(
        runtime,
        recording_id,
        attempts=40,
        first_failure_at=utcnow() - timedelta(hours=24, minutes=1),
    )
    await start_worker()
    [error] = await webhook_receiver.wait_for(1, within=20)
    assert error.event_type == "recording_error"
    assert error.payload["reason"] == "Internal server error"
    assert error.payload["detail"].startswith("custom storage kept failing for more than 24 h")
    row = await wait_for_status(runtime, recording_id, "failed")
    assert row.attempts == 41 and row.default_store_key is not None


async def test_sweep_finishes_a_crash_between_commit_and_delete(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, webhook_receiver: WebhookReceiver
) -> None:
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.2))
    row = await recording_row(runtime, recording_id)
    assert row.default_store_key is not None
    # the state a worker leaves when it dies right after committing the upload
    await update_recording(
        runtime,
        recording_id,
        status="stored",
        backend="s3",
        bucket="b",
        object_key="k",
        recording_url="s3://b/k",
        lease_owner=None,
        lease_until=None,
    )
    assert staged_path(runtime, row.default_store_key).exists()
    await sweep_staging_copies(runtime)
    assert not staged_path(runtime, row.default_store_key).exists()
    assert (await recording_row(runtime, recording_id)).default_store_key is None
    await sweep_staging_copies(runtime)  # idempotent
    await asyncio.sleep(0)


async def test_credentials_deleted_and_created_again_retry_failed_recordings(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    # revisions restart with a new credentials row, so the POST must retry every failure
    bucket, connection_id, recording_id, _, audio, _ = await fail_on_a_wrong_secret(
        api, runtime, account, seaweedfs, webhook_receiver, start_worker
    )
    deleted = await api.delete(
        f"/v2/custom_storage_credentials/{connection_id}", headers=bearer(account.api_key)
    )
    assert deleted.status_code == 204
    await set_credentials(
        api, account.api_key, connection_id, "s3-generic", s3_generic(seaweedfs, bucket)
    )
    [first, saved] = await webhook_receiver.wait_for(2)
    assert saved.event_type == "call.recording.saved", (first.body, saved.body)
    row = await wait_for_status(runtime, recording_id, "stored")
    assert (
        await read_back("s3-generic", s3_generic(seaweedfs, bucket), f"{row.object_key}") == audio
    )
