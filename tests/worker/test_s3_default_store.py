"""A scaled-out deployment's default store is an S3 bucket: the worker copies a recording to
custom storage through a temp file in the data dir, then deletes the staging object."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.db import transaction
from callvault.runtime import Runtime
from callvault.storage.factory import open_custom_store
from callvault.worker.runner import Worker
from tests.conftest import make_settings
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    create_application,
    ingest,
    make_wav,
    recording_row,
    set_credentials,
    wait_until,
)


@pytest.fixture
async def s3_runtime(
    tmp_path: Path, database_url: str, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    bucket = f"default-{secrets.token_hex(5)}"
    seaweedfs.create_bucket(bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    settings = make_settings(
        tmp_path,
        database_url,
        default_store_url=f"s3://{bucket}?region=us-east-1&endpoint={seaweedfs.endpoint}",
    )
    runtime = Runtime.build(settings)
    yield runtime
    await runtime.close()


async def test_copy_from_an_s3_default_store(
    s3_runtime: Runtime, seaweedfs: SeaweedFS, webhook_receiver: WebhookReceiver
) -> None:
    runtime = s3_runtime
    assert runtime.default_store.backend == "s3"
    async with transaction(runtime.sessions) as session:
        account = await create_account(session, runtime.settings.keyring, "s3 default")
    bucket = f"rec-{secrets.token_hex(5)}"
    seaweedfs.create_bucket(bucket)
    configuration = {
        "bucket": bucket,
        "region": seaweedfs.region,
        "aws_access_key_id": seaweedfs.access_key,
        "aws_secret_access_key": seaweedfs.secret_key,
        "endpoint": seaweedfs.endpoint,
    }
    transport = httpx.ASGITransport(app=create_app(runtime))
    worker = Worker(runtime, poll_seconds=0.1)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as api:
        connection_id = await create_application(api, account.api_key, webhook_receiver.url())
        await set_credentials(api, account.api_key, connection_id, "s3-generic", configuration)
        audio = make_wav(0.5)
        recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
        staging_key = (await recording_row(runtime, recording_id)).default_store_key
        assert staging_key is not None
        assert await runtime.default_store.head(staging_key) is not None
        await worker.start()
        try:
            [saved] = await webhook_receiver.wait_for(1)
            assert saved.event_type == "call.recording.saved"

            async def staging_gone() -> bool:
                return (await recording_row(runtime, recording_id)).default_store_key is None

            await wait_until(staging_gone)
        finally:
            await worker.stop()
    row = await recording_row(runtime, recording_id)
    assert row.status == "stored" and row.bucket == bucket and row.object_key
    assert await runtime.default_store.head(staging_key) is None
    custom = open_custom_store("s3-generic", configuration, allow_private_networks=True)
    assert b"".join([c async for c in custom.get_stream(row.object_key)]) == audio
    # the temp copy in the data dir is gone too
    staging_dir = runtime.settings.data_dir / "staging"
    assert not staging_dir.exists() or list(staging_dir.iterdir()) == []
