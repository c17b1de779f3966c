"""Opening stores: default store URLs, custom configurations, and the environment's reach."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from callvault.storage import (
    LocalStore,
    ObjectStore,
    StorageError,
    StorageErrorKind,
    open_custom_store,
    open_default_store,
)
from callvault.storage.checked_endpoint import EndpointCheckedStore
from tests.servers import SeaweedFS, make_service_account
from tests.storage.environment import set_storage_env

SECRET = b"link-secret-0123456789"
KEY = "acct/2022-02-02/leg-1643805460.wav"


def default(url: str, data_dir: Path) -> ObjectStore:
    return open_default_store(
        url, data_dir=data_dir, public_url="https://vault.test", link_secret=SECRET
    )


def test_bare_file_url_means_the_data_dir(tmp_path: Path) -> None:
    store = default("file://", tmp_path)
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "recordings").resolve()
    assert store.root.is_dir()


def test_file_url_with_a_directory(tmp_path: Path) -> None:
    store = default(f"file://{tmp_path}/elsewhere", tmp_path / "data")
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "elsewhere").resolve()


@pytest.mark.parametrize(
    "url", ["ftp://x", "s3://", "s3://bucket?colour=blue", "gs://bucket", "/plain/path"]
)
def test_unsupported_default_store_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        default(url, tmp_path)


async def test_s3_default_store_presigns_for_600_seconds(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    seaweedfs.create_bucket("platform-recordings")
    store = default(
        f"s3://platform-recordings?region=us-east-1&endpoint={seaweedfs.endpoint}", tmp_path
    )
    source = tmp_path / "r.wav"
    source.write_bytes(b"RIFF-default-store")
    await store.put_file(KEY, source, content_type="audio/wav", metadata={})

    url = await store.signed_get_url(KEY, 600)
    parts = urlsplit(url)
    assert url.startswith(f"{seaweedfs.endpoint}/platform-recordings/{KEY}?")
    assert parse_qs(parts.query)["X-Amz-Expires"] == ["600"]
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"RIFF-default-store"
    assert store.canonical_url(KEY) == f"s3://platform-recordings/{KEY}"


def test_unsupported_backend() -> None:
    with pytest.raises(StorageError) as caught:
        open_custom_store("dropbox", {"bucket": "recs"})
    assert caught.value.kind is StorageErrorKind.PERMANENT_AUTH
    assert str(caught.value) == "dropbox bucket recs: Unsupported backend"


def test_invalid_bucket_name_never_reaches_a_url() -> None:
    with pytest.raises(StorageError) as caught:
        open_custom_store(
            "s3",
            {
                "bucket": "bars/../other?x=",
                "region": "us-east-1",
                "aws_access_key_id": "AKIA",
                "aws_secret_access_key": "secret-secret",
            },
        )
    assert caught.value.kind is StorageErrorKind.PERMANENT_NOT_FOUND
    assert "invalid name" in str(caught.value)


AWS_CONFIG = {
    "bucket": "tacrde12904",
    "region": "eu-west-1",
    "aws_access_key_id": "AKIAEXAMPLE",
    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


async def test_aws_uses_the_region_endpoint_and_ignores_the_platform_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the platform's own AWS settings must not leak into a customer's store
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "platform-session-token")
    monkeypatch.setenv("AWS_ENDPOINT", "http://platform-endpoint.internal")
    store = open_custom_store("s3", AWS_CONFIG)
    url = await store.signed_get_url(KEY, 600)  # signing is local: no request is sent
    assert url.startswith(f"https://tacrde12904.s3.eu-west-1.amazonaws.com/{KEY}?")
    query = parse_qs(urlsplit(url).query)
    assert "X-Amz-Security-Token" not in query
    assert query["X-Amz-Credential"][0].startswith("AKIAEXAMPLE/")
    assert store.canonical_url(KEY) == f"s3://tacrde12904/{KEY}"


async def test_aws_bucket_with_dots_uses_path_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    store = open_custom_store("s3", {**AWS_CONFIG, "bucket": "recordings.example.com"})
    url = await store.signed_get_url(KEY, 60)
    assert url.startswith(f"https://s3.eu-west-1.amazonaws.com/recordings.example.com/{KEY}?")


async def test_aws_endpoint_url_env_overrides_with_path_style(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/")
    store = open_custom_store("s3", AWS_CONFIG)
    url = await store.signed_get_url(KEY, 60)
    assert url.startswith(f"http://127.0.0.1:9/tacrde12904/{KEY}?")


async def test_s3_generic_canonical_url_is_the_endpoint_form() -> None:
    store = open_custom_store(
        "s3-generic", {**AWS_CONFIG, "endpoint": "https://minio.example.com:9000/"}
    )
    assert store.canonical_url(KEY) == f"https://minio.example.com:9000/tacrde12904/{KEY}"
    url = await store.signed_get_url(KEY, 60)
    assert url.startswith(f"https://minio.example.com:9000/tacrde12904/{KEY}?")


async def test_azure_defaults_and_the_platform_env(monkeypatch: pytest.MonkeyPatch) -> None:
    set_storage_env(monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT")
    # a bearer token in the environment would make obstore sign with a user delegation key
    # (a network call); the customer's account key must be used instead
    monkeypatch.setenv("AZURE_STORAGE_TOKEN", "platform-bearer-token")
    store = open_custom_store(
        "azure",
        {"bucket": "my-bucket", "account_name": "myaccount", "account_key": "c2VjcmV0LWtleQ=="},
        timeout_secs=2,
    )
    assert store.canonical_url(KEY) == f"https://myaccount.blob.core.windows.net/my-bucket/{KEY}"
    url = await store.signed_get_url(KEY, 600)
    assert url.startswith(f"https://myaccount.blob.core.windows.net/my-bucket/{KEY}?")
    assert "sig" in parse_qs(urlsplit(url).query)


async def test_gcs_signs_for_storage_googleapis_com(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    account = make_service_account()
    store = open_custom_store("gcs", {"bucket": "tacrde12904", "credentials": account.json})
    url = await store.signed_get_url(KEY, 600)
    assert url.startswith(f"https://storage.googleapis.com/tacrde12904/{KEY}?")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Goog-Expires"] == ["600"]
    assert query["X-Goog-Credential"][0].startswith(account.info["client_email"] + "/")
    assert store.canonical_url(KEY) == f"gs://tacrde12904/{KEY}"


def test_private_endpoints_are_refused_unless_allowed() -> None:
    """Fail closed: without the setting, an s3-generic endpoint is checked before each request."""
    configuration = {**AWS_CONFIG, "endpoint": "http://127.0.0.1:9"}
    assert isinstance(open_custom_store("s3-generic", configuration), EndpointCheckedStore)
    allowed = open_custom_store("s3-generic", configuration, allow_private_networks=True)
    assert not isinstance(allowed, EndpointCheckedStore)
