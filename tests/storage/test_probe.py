"""probe_store: what the validate endpoint reports, for every backend."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest

from callvault.storage import ObjectInfo, ObjectStore, StorageError, StorageErrorKind, probe_store
from tests.storage.conftest import Backend


async def test_good_credentials_pass(backend: Backend) -> None:
    store = backend.open(timeout_secs=15)
    recorder = RecordingStore(store)
    assert await probe_store(recorder) is None
    # it wrote one probe object under callvault-probe/ and left nothing behind
    assert len(recorder.put_keys) == 1
    assert recorder.put_keys[0].startswith("callvault-probe/")
    assert await store.head(recorder.put_keys[0]) is None


async def test_wrong_secret_gives_the_reason(backend: Backend) -> None:
    bucket = backend.new_bucket()
    reason = await probe_store(backend.open_with_wrong_secret(bucket))
    assert reason is not None
    expected = {
        "s3": f"s3 bucket {bucket}: SignatureDoesNotMatch — the secret key is wrong",
        "s3-generic": (
            f"s3-generic bucket {bucket}: SignatureDoesNotMatch — the secret key is wrong"
        ),
        "azure": f"azure container {bucket}: AuthorizationFailure — the account key is wrong",
        "gcs": f"gcs bucket {bucket}: HTTP 401 — the service account key was rejected",
    }[backend.name]
    assert reason.startswith(expected)
    for secret in [*backend.secrets, backend.wrong_secret]:
        assert secret not in reason


async def test_missing_bucket_gives_the_reason(backend: Backend) -> None:
    bucket = f"missing-{int(time.time() * 1000)}"
    reason = await probe_store(backend.open(bucket))
    noun = "container" if backend.name == "azure" else "bucket"
    assert reason is not None
    assert reason.startswith(f"{backend.name} {noun} {bucket}: ")
    assert reason.endswith(f"no such {noun} (failed at: write)")


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


async def test_hung_endpoint_answers_within_the_timeout(
    make_backend: Callable[[str], Backend], hung_endpoint: str
) -> None:
    # the store itself has generous timeouts (None): the probe's own deadline must hold
    store = make_backend("s3-generic").open(endpoint=hung_endpoint)
    started = time.monotonic()
    reason = await probe_store(store, timeout_secs=2)
    elapsed = time.monotonic() - started
    assert reason is not None
    assert "timed out after 2 s" in reason
    assert elapsed < 2.5


async def test_probe_object_is_deleted_when_head_fails(backend: Backend) -> None:
    store = backend.open(timeout_secs=15)
    failing = RecordingStore(store, fail_head=True)
    reason = await probe_store(failing)
    assert reason == (
        f"{store.backend} bucket {store.bucket}: injected head failure (failed at: read back)"
    ).replace("azure bucket", "azure container")
    assert len(failing.put_keys) == 1
    assert await store.head(failing.put_keys[0]) is None


async def test_size_mismatch_is_reported(backend: Backend) -> None:
    store = backend.open(timeout_secs=15)
    reason = await probe_store(RecordingStore(store, size_offset=1))
    assert reason is not None
    assert "reads back" in reason


class RecordingStore:
    """Delegates to a real store, records the keys it writes, and can break head()."""

    def __init__(self, inner: ObjectStore, *, fail_head: bool = False, size_offset: int = 0):
        self.inner = inner
        self.backend = inner.backend
        self.bucket = inner.bucket
        self.noun = getattr(inner, "noun", "bucket")
        self.put_keys: list[str] = []
        self.fail_head = fail_head
        self.size_offset = size_offset

    async def put_file(
        self, key: str, source: Path | bytes, *, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        await self.inner.put_file(key, source, content_type=content_type, metadata=metadata)
        self.put_keys.append(key)

    async def head(self, key: str) -> ObjectInfo | None:
        if self.fail_head:
            from callvault.storage.base import where

            raise StorageError(
                StorageErrorKind.TRANSIENT,
                self.backend,
                self.bucket,
                f"{where(self.backend, self.bucket, self.noun)}: injected head failure",
            )
        info = await self.inner.head(key)
        if info is None or not self.size_offset:
            return info
        return ObjectInfo(info.size + self.size_offset, info.content_type, info.metadata)

    def get_stream(self, key: str) -> AsyncIterator[bytes]:
        return self.inner.get_stream(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def signed_get_url(self, key: str, expires_in: int) -> str:
        return await self.inner.signed_get_url(key, expires_in)

    def canonical_url(self, key: str) -> str:
        return self.inner.canonical_url(key)


async def test_a_slow_store_is_cut_at_the_deadline(
    make_backend: Callable[[str], Backend],
) -> None:
    class Slow(RecordingStore):
        async def put_file(
            self,
            key: str,
            source: Path | bytes,
            *,
            content_type: str,
            metadata: Mapping[str, str],
        ) -> None:
            await asyncio.sleep(10)

    inner = make_backend("s3-generic").open()
    started = time.monotonic()
    reason = await probe_store(Slow(inner), timeout_secs=0.5)
    assert time.monotonic() - started < 1
    assert reason == (
        f"s3-generic bucket {inner.bucket}: timed out after 0.5 s — "
        "the storage endpoint did not answer"
    )
