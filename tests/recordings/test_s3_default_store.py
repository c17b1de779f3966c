"""Ingest and download links with an S3 default store (scaled-out mode), on a real SeaweedFS."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.recordings.conftest import ingest_ok, recording_row
from tests.recordings.samples import make_wav
from tests.servers import SeaweedFS

pytestmark = pytest.mark.usefixtures("clean_incoming")


@pytest.fixture
async def s3_runtime(
    runtime: Runtime, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    bucket = f"default-{uuid.uuid4().hex[:10]}"
    seaweedfs.create_bucket(bucket)
    # the default store takes its credentials from the environment, when it is opened
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    url = f"s3://{bucket}?region={seaweedfs.region}&endpoint={seaweedfs.endpoint}"
    built = Runtime.build(dataclasses.replace(runtime.settings, default_store_url=url))
    yield built
    await built.close()


@pytest.fixture
async def s3_api(s3_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(s3_runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        yield client


async def test_s3_default_store_ingest_presigned_link_and_delete(
    s3_api: httpx.AsyncClient, s3_runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    audio = make_wav(seconds=0.3)
    recording_id = await ingest_ok(s3_api, s3_runtime, connection_id, audio)
    key = (await recording_row(s3_runtime, recording_id)).default_store_key
    assert key is not None and key.endswith(".wav")
    info = await s3_runtime.default_store.head(key)
    assert info is not None and info.size == len(audio)
    assert info.metadata["sha256"] == hashlib.sha256(audio).hexdigest()

    got = await s3_api.get(f"/v2/recordings/{recording_id}", headers=auth(account))
    link = got.json()["data"]["download_urls"]["wav"]
    assert "X-Amz-Expires=600" in link
    async with httpx.AsyncClient() as client:
        download = await client.get(link)
        assert download.status_code == 200 and download.content == audio
        tampered = await client.get(link.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"))
        assert tampered.status_code == 403

    # self-signed file links are for the local store only
    files = await s3_api.get(f"/v2/recording_files/{key}?expires=1&signature=x")
    assert files.status_code == 404

    deleted = await s3_api.delete(f"/v2/recordings/{recording_id}", headers=auth(account))
    assert deleted.status_code == 200
    assert await s3_runtime.default_store.head(key) is None
