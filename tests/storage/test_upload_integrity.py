"""A body corrupted on its way to the store is never kept silently (issue 14).

Every backend is reached through `ByteFlipProxy`, which flips one byte of the next upload's
body. Each store's put_file sends a checksum of the file (`checks_uploads`): S3 and s3-generic
x-amz-checksum-sha256, Azure Content-MD5, GCS CRC32C (also compared with the one GCS answers).
The corrupted upload must fail with a transient StorageError (the worker retries it), nothing
corrupt may be left under the key, and the next, clean, upload lands intact. Small bodies (one
request) and bodies above the part size (multipart / blocks / resumable) both, sent from a file
and from bytes in memory (what the worker uploads a small recording from).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from callvault.storage.base import ObjectStore, StorageError, StorageErrorKind
from callvault.storage.factory import open_custom_store
from tests.servers import ByteFlipProxy
from tests.storage.conftest import CUSTOM_BACKENDS, Backend
from tests.storage.environment import set_storage_env

PART = 5 * 1024 * 1024
SIZES = {"single": 200_000, "multipart": 2 * PART + 12345}
SOURCES = ["file", "bytes"]


def proxied(backend: Backend, proxy: ByteFlipProxy, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The backend's configuration, its endpoint replaced by the proxy's."""
    if backend.name == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    elif backend.name == "azure":
        set_storage_env(
            monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", f"{proxy.endpoint}/{{account_name}}"
        )
    elif backend.name == "gcs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)

    def configuration(bucket: str) -> dict[str, Any]:
        config = backend.configuration(bucket)
        if backend.name == "s3-generic":
            config["endpoint"] = proxy.endpoint
        return config

    return configuration


def server_address(backend: Backend) -> tuple[str, int]:
    endpoint = backend.server.endpoint
    parts = urlsplit(endpoint)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def read(store: ObjectStore, key: str) -> bytes | None:
    try:
        return b"".join([chunk async for chunk in store.get_stream(key)])
    except StorageError as exc:
        assert exc.kind is StorageErrorKind.PERMANENT_NOT_FOUND
        return None


async def flipped_upload(
    backend: Backend,
    size: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source_kind: str = "file",
) -> tuple[StorageError | None, bytes | None, bytes, ObjectStore, str, Path | bytes]:
    """One upload through the proxy with one byte flipped, from a file or from bytes: (the
    error, what the store holds under the key afterwards, the bytes sent, the store, the key,
    what put_file was given)."""
    bucket = backend.new_bucket()
    host, port = server_address(backend)
    proxy = ByteFlipProxy(host, port, offset=min(size // 2, 100_000))  # within the 1st part
    configuration = proxied(backend, proxy, monkeypatch)(bucket)
    store = open_custom_store(backend.name, configuration, allow_private_networks=True)
    data = os.urandom(size)
    source: Path | bytes = data
    if source_kind == "file":
        source = tmp_path / "recording.wav"
        source.write_bytes(data)
    key = f"acct/2024-01-01/leg-{size}"
    proxy.arm(1)
    error: StorageError | None = None
    try:
        await store.put_file(key, source, content_type="audio/wav", metadata={"sha256": "x"})
    except StorageError as exc:
        error = exc
    assert proxy.flipped == 1, "the proxy corrupted nothing: the test proves nothing"
    # read straight from the server, not through the proxy
    if backend.name == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", backend.server.endpoint)
    elif backend.name == "azure":
        set_storage_env(
            monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", backend.server.endpoint_template
        )
    elif backend.name == "gcs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", backend.server.endpoint)
    direct = open_custom_store(
        backend.name, backend.configuration(bucket), allow_private_networks=True
    )
    held = await read(direct, key)
    if error is not None:
        # the worker's retry: the proxy flips nothing more, the upload lands intact
        await store.put_file(key, source, content_type="audio/wav", metadata={"sha256": "x"})
        assert await read(direct, key) == data
    proxy.close()
    return error, held, data, store, key, source


@pytest.mark.parametrize("source_kind", SOURCES)
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("name", CUSTOM_BACKENDS)
async def test_a_corrupted_upload_is_refused(
    name: str,
    size: int,
    source_kind: str,
    make_backend: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = make_backend(name)
    error, held, _data, store, _key, _source = await flipped_upload(
        backend, size, tmp_path, monkeypatch, source_kind
    )
    assert store.checks_uploads  # the worker skips its HEAD after this store's puts
    assert error is not None, "the store kept a corrupted upload without a word"
    assert error.kind is StorageErrorKind.TRANSIENT  # the worker tries again
    assert "the upload arrived corrupted" in str(error)  # this fault, not some other
    # nothing corrupt under the key: refused before it was kept (S3, Azure, real GCS), or
    # kept and deleted by put_file (fake-gcs-server checks no sent CRC32C)
    assert held is None
