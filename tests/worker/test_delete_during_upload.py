"""A recording deleted through the API while its upload runs ends deleted, and the object the
upload put into the customer's bucket is removed again (no saved webhook either)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.recordings import pipeline as uploads
from callvault.runtime import Runtime
from callvault.storage.base import ObjectStore
from callvault.worker.runner import Worker
from tests.faults.cluster import list_bucket
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import (
    bearer,
    create_application,
    events_for,
    ingest,
    make_wav,
    new_bucket,
    recording_row,
    s3_generic,
    set_credentials,
    wait_until,
)


class PausingStore:
    """The real store; after its put, waits until the test has deleted the recording."""

    def __init__(self, inner: ObjectStore, put_done: asyncio.Event, go_on: asyncio.Event):
        self.inner, self.put_done, self.go_on = inner, put_done, go_on

    async def put_file(self, key: str, source: Path | bytes, **kwargs: Any) -> None:
        await self.inner.put_file(key, source, **kwargs)
        self.put_done.set()
        await self.go_on.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_deleted_while_uploading_leaves_nothing_in_the_bucket(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = new_bucket(seaweedfs)
    connection_id = await create_application(api, account.api_key, webhook_receiver.url())
    configuration = s3_generic(seaweedfs, bucket)
    await set_credentials(api, account.api_key, connection_id, "s3-generic", configuration)
    put_done, go_on = asyncio.Event(), asyncio.Event()
    real_store_for = uploads.UploadContext.store_for

    def pausing(self: uploads.UploadContext, *args: Any) -> Any:
        return PausingStore(real_store_for(self, *args), put_done, go_on)

    monkeypatch.setattr(uploads.UploadContext, "store_for", pausing)
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, make_wav(0.3))
    async with asyncio.timeout(20):
        await put_done.wait()
    assert await list_bucket(seaweedfs, bucket), "the object is in the bucket (it raced in)"
    deleted = await api.delete(f"/v2/recordings/{recording_id}", headers=bearer(account.api_key))
    assert deleted.status_code == 200, deleted.text
    go_on.set()

    async def removed() -> bool:
        return not await list_bucket(seaweedfs, bucket)

    await wait_until(removed, within=20, what="the raced-in object removed")
    row = await recording_row(runtime, recording_id)
    assert row.status == "deleted" and row.backend is None and row.lease_owner is None
    assert await events_for(runtime, recording_id) == []  # no saved webhook for it
    await asyncio.sleep(0.5)
    assert webhook_receiver.deliveries == []
