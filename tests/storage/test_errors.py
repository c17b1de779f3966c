"""Each error kind produced for real by each backend's server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from callvault.storage import ObjectStore, StorageError, StorageErrorKind, open_custom_store
from tests.servers import SeaweedFS, closed_port
from tests.storage.conftest import Backend
from tests.storage.environment import set_storage_env

AUTH = StorageErrorKind.PERMANENT_AUTH
NOT_FOUND = StorageErrorKind.PERMANENT_NOT_FOUND
TRANSIENT = StorageErrorKind.TRANSIENT
KEY = "acct/2022-02-02/leg-1643805460"
RECORDING_SIZE = 1004

WRONG_SECRET_REASON = {
    "s3": "s3 bucket {bucket}: SignatureDoesNotMatch — the secret key is wrong",
    "s3-generic": "s3-generic bucket {bucket}: SignatureDoesNotMatch — the secret key is wrong",
    # Azurite says AuthorizationFailure where Azure says AuthenticationFailed; both map to auth
    "azure": "azure container {bucket}: AuthorizationFailure — the account key is wrong",
    "gcs": "gcs bucket {bucket}: HTTP 401 — the service account key was rejected",
}
MISSING_BUCKET_REASON = {
    "s3": "s3 bucket {bucket}: NoSuchBucket — no such bucket",
    "s3-generic": "s3-generic bucket {bucket}: NoSuchBucket — no such bucket",
    "azure": "azure container {bucket}: ContainerNotFound — no such container",
    "gcs": "gcs bucket {bucket}: HTTP 404 — no such bucket",
}


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "r.wav"
    path.write_bytes(b"RIFF" + b"\0" * (RECORDING_SIZE - 4))
    return path


async def put(store: ObjectStore, path: Path) -> None:
    await store.put_file(KEY, path, content_type="audio/wav", metadata={"call_leg_id": "leg"})


def assert_clean(error: StorageError, backend: Backend) -> None:
    for secret in [*backend.secrets, backend.wrong_secret]:
        assert secret not in str(error)
        for line in secret.splitlines():
            if len(line) >= 16:
                assert line not in str(error)


async def test_wrong_secret_is_permanent_auth(backend: Backend, recording: Path) -> None:
    bucket = backend.new_bucket()
    store = backend.open_with_wrong_secret(bucket)
    with pytest.raises(StorageError) as caught:
        await put(store, recording)
    error = caught.value
    assert error.kind is AUTH
    assert str(error).startswith(WRONG_SECRET_REASON[backend.name].format(bucket=bucket))
    assert (error.backend, error.bucket) == (backend.name, bucket)
    assert_clean(error, backend)

    # reads are refused the same way (an empty 403/401 answer to a HEAD, for instance)
    with pytest.raises(StorageError) as caught:
        await store.head(KEY)
    assert caught.value.kind is AUTH
    assert_clean(caught.value, backend)


async def test_missing_bucket_is_permanent_not_found(backend: Backend, recording: Path) -> None:
    bucket = f"missing-{int(time.time() * 1000)}"
    store = backend.open(bucket)
    with pytest.raises(StorageError) as caught:
        await put(store, recording)
    assert caught.value.kind is NOT_FOUND
    assert str(caught.value) == MISSING_BUCKET_REASON[backend.name].format(bucket=bucket)


@pytest.mark.parametrize("backend_name", ["s3-generic", "azure", "gcs"])
async def test_unreachable_endpoint_is_transient(
    backend_name: str,
    make_backend: Callable[[str], Backend],
    monkeypatch: pytest.MonkeyPatch,
    recording: Path,
) -> None:
    backend = make_backend(backend_name)
    bucket = backend.new_bucket()
    nowhere = f"http://127.0.0.1:{closed_port()}"
    if backend_name == "s3-generic":
        store = backend.open(bucket, endpoint=nowhere, timeout_secs=3)
    else:
        if backend_name == "azure":
            set_storage_env(
                monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", nowhere + "/{account_name}"
            )
        else:
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", nowhere)
        store = backend.open(bucket, timeout_secs=3)
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        await put(store, recording)
    assert caught.value.kind is TRANSIENT
    assert "connection refused — the storage endpoint is unreachable" in str(caught.value)
    assert time.monotonic() - started < 10


async def test_stopped_server_is_transient_and_a_restart_recovers(
    tmp_path: Path, recording: Path
) -> None:
    """A private SeaweedFS, stopped and started again on the same dir and port."""
    with SeaweedFS(tmp_path / "s3") as server:
        server.create_bucket("bars")
        store = open_custom_store(
            "s3-generic",
            {
                "bucket": "bars",
                "region": "us-east-1",
                "aws_access_key_id": server.access_key,
                "aws_secret_access_key": server.secret_key,
                "endpoint": server.endpoint,
            },
            timeout_secs=3,
            allow_private_networks=True,
        )
        await put(store, recording)

        server.stop()
        for operation in (lambda: put(store, recording), lambda: store.head(KEY)):
            with pytest.raises(StorageError) as caught:
                await operation()
            assert caught.value.kind is TRANSIENT
            assert str(caught.value) == (
                "s3-generic bucket bars: connection refused — the storage endpoint is unreachable"
            )

        server.start()
        info = await store.head(KEY)
        assert info is not None
        assert info.size == RECORDING_SIZE


async def test_delete_in_a_missing_bucket_is_not_silently_fine(backend: Backend) -> None:
    if backend.name == "gcs":
        pytest.skip("fake-gcs answers a bare 404 for a missing bucket (GCS names the bucket)")
    store = backend.open(f"missing-{int(time.time() * 1000)}")
    with pytest.raises(StorageError) as caught:
        await store.delete(KEY)
    assert caught.value.kind is NOT_FOUND
