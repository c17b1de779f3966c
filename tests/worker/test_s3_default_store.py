"""A scaled-out deployment's default store is an S3 bucket: the worker copies a recording to
custom storage — from memory up to `IN_MEMORY_LIMIT`, through a temp file in the data dir
above — then deletes the staging object."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.config import Settings
from callvault.db import transaction
from callvault.jobs import make_worker
from callvault.recordings import pipeline as uploads
from callvault.runtime import Runtime
from callvault.scratch import temp_path
from callvault.storage.local import LocalStore
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.storage.conftest import CUSTOM_BACKENDS, backend_for
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
    tmp_path: Path, settings: Settings, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Runtime]:
    bucket = f"default-{secrets.token_hex(5)}"
    seaweedfs.create_bucket(bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    # the session's database and keys (rows sealed with other keys would not open there)
    runtime = Runtime.build(
        dataclasses.replace(
            settings,
            data_dir=tmp_path,
            default_store_url=f"s3://{bucket}?region=us-east-1&endpoint={seaweedfs.endpoint}",
        )
    )
    yield runtime
    await runtime.close()


@pytest.fixture
def staging_files(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every temp file the worker names for a default-store copy (then made as before)."""
    named: list[Path] = []

    def recorded_temp_path(directory: Path, suffix: str = ".part") -> Path:
        path = temp_path(directory, suffix)
        named.append(path)
        return path

    monkeypatch.setattr(uploads, "temp_path", recorded_temp_path)
    return named


async def upload_through_the_worker(
    runtime: Runtime,
    webhook_receiver: WebhookReceiver,
    backend: str,
    configuration: dict[str, object],
    audio: bytes,
) -> str:
    """Ingest `audio` for a connection storing in `configuration`, run a worker until the
    recording is stored and its staging object deleted; the object key in the custom store."""
    assert runtime.default_store.backend == "s3"
    async with transaction(runtime.sessions) as session:
        account = await create_account(session, runtime.settings.keyring, "s3 default")
    transport = httpx.ASGITransport(app=create_app(runtime))
    worker = make_worker(runtime, poll_seconds=0.1)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as api:
        connection_id = await create_application(api, account.api_key, webhook_receiver.url())
        await set_credentials(api, account.api_key, connection_id, backend, configuration)
        recording_id, _ = await ingest(api, runtime.settings.ingest_token, connection_id, audio)
        staging_key = (await recording_row(runtime, recording_id)).default_store_key
        assert staging_key is not None
        assert await runtime.default_store.head(staging_key) is not None
        await worker.start()
        try:
            [saved] = await webhook_receiver.wait_for(1, within=20)
            assert saved.event_type == "call.recording.saved", saved.body

            async def staging_gone() -> bool:
                return (await recording_row(runtime, recording_id)).default_store_key is None

            await wait_until(staging_gone)
        finally:
            await worker.stop()
    row = await recording_row(runtime, recording_id)
    assert row.status == "stored" and row.bucket == configuration["bucket"] and row.object_key
    assert await runtime.default_store.head(staging_key) is None
    return row.object_key


async def lands_intact(
    runtime: Runtime,
    receiver: WebhookReceiver,
    name: str,
    audio: bytes,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`audio` through the worker into a new bucket of backend `name`, read back unchanged."""
    backend = backend_for(name, request, monkeypatch)
    bucket = backend.new_bucket()
    key = await upload_through_the_worker(
        runtime, receiver, name, backend.configuration(bucket), audio
    )
    custom = backend.open(bucket)
    assert b"".join([c async for c in custom.get_stream(key)]) == audio


@pytest.mark.parametrize("name", CUSTOM_BACKENDS)
async def test_a_small_recording_is_uploaded_from_memory(
    name: str,
    s3_runtime: Runtime,
    staging_files: list[Path],
    webhook_receiver: WebhookReceiver,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audio = make_wav(0.5)
    assert len(audio) <= uploads.IN_MEMORY_LIMIT
    await lands_intact(s3_runtime, webhook_receiver, name, audio, request, monkeypatch)
    assert staging_files == []  # no temp file named, none written
    assert not (s3_runtime.settings.data_dir / "staging").exists()


async def test_a_recording_above_the_limit_goes_through_a_temp_file(
    s3_runtime: Runtime,
    staging_files: list[Path],
    webhook_receiver: WebhookReceiver,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uploads, "IN_MEMORY_LIMIT", 4096)
    audio = make_wav(0.5)
    assert len(audio) > uploads.IN_MEMORY_LIMIT
    await lands_intact(s3_runtime, webhook_receiver, "s3-generic", audio, request, monkeypatch)
    [staged] = staging_files
    assert staged.parent == s3_runtime.settings.data_dir / "staging"
    assert not staged.exists()  # removed after the upload


async def stored_in_default(runtime: Runtime, data: bytes) -> str:
    key = f"acct/2024-01-01/leg-{secrets.token_hex(4)}.wav"
    await runtime.default_store.put_file(key, data, content_type="audio/wav", metadata={})
    return key


async def test_the_copy_is_read_into_memory_up_to_the_limit_inclusive(
    s3_runtime: Runtime, staging_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "IN_MEMORY_LIMIT", 5000)
    data = os.urandom(5000)
    key = await stored_in_default(s3_runtime, data)
    async with uploads.default_store_copy(s3_runtime, key, len(data)) as source:
        assert source == data
    assert staging_files == []


async def test_a_copy_larger_than_its_row_says_falls_back_to_a_temp_file(
    s3_runtime: Runtime, staging_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row's size picks memory, the stream yields more: the chunk that passes the limit
    switches to a temp file (the chunks read so far first), nothing more is held."""
    monkeypatch.setattr(uploads, "IN_MEMORY_LIMIT", 64 * 1024)
    data = os.urandom(3 * 1024 * 1024)  # the store streams it in chunks of 1 MiB or more
    key = await stored_in_default(s3_runtime, data)
    store = s3_runtime.default_store
    chunk_sizes: list[int] = []
    read_when_named: list[int] = []

    async def counted_stream(key: str) -> AsyncIterator[bytes]:
        async for chunk in type(store).get_stream(store, key):
            chunk_sizes.append(len(chunk))
            yield chunk

    staged_temp_path = uploads.temp_path  # the staging_files fixture's

    def noted_temp_path(directory: Path, suffix: str = ".part") -> Path:
        read_when_named.append(sum(chunk_sizes))
        return staged_temp_path(directory, suffix)

    monkeypatch.setattr(store, "get_stream", counted_stream)
    monkeypatch.setattr(uploads, "temp_path", noted_temp_path)
    async with uploads.default_store_copy(s3_runtime, key, 1000) as source:
        assert isinstance(source, Path)
        assert source.read_bytes() == data
    assert len(chunk_sizes) > 1
    assert read_when_named == [chunk_sizes[0]]  # not the whole copy first
    assert staging_files == [source]
    assert not source.exists()


async def test_a_local_default_store_passes_its_own_file(
    runtime: Runtime, staging_files: list[Path]
) -> None:
    data = os.urandom(1000)
    key = await stored_in_default(runtime, data)
    store = runtime.default_store
    assert isinstance(store, LocalStore)
    async with uploads.default_store_copy(runtime, key, len(data)) as source:
        assert source == store.path_for(key)
    assert staging_files == []
    await store.delete(key)
