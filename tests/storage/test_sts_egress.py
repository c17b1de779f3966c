"""AssumeRole is signed with callvault's own AWS identity (issue 21, medium finding): it goes
only to an STS endpoint the operator allows, never to a customer's host, and never through a
proxy from the environment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callvault.storage import StorageError, open_custom_store
from tests.security.receiver import Receiver
from tests.storage.environment import set_storage_env

OPERATOR_KEY_ID = "AKIAOPERATOR00000001"


@pytest.fixture
async def customer_host() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
async def environment_proxy() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture(autouse=True)
def operator_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", OPERATOR_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret-0123456789abcdef")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)


def role_configuration(endpoint: str) -> dict[str, str]:
    return {
        "bucket": "recordings",
        "region": "us-east-1",
        "endpoint": endpoint,
        "role_arn": "arn:aws:iam::123456789012:role/rec",
        "external_id": "callvault-ext",
        "connection_id": "sts-egress",
    }


async def test_no_sts_request_reaches_a_customer_host_that_is_not_allowed(
    customer_host: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    set_storage_env(monkeypatch, "CALLVAULT_STS_ENDPOINTS", "https://sts.example.com")
    with pytest.raises(StorageError) as refused:
        store = open_custom_store(
            "s3-generic", role_configuration(customer_host.url), allow_private_networks=True
        )
        path = tmp_path / "a.wav"
        path.write_bytes(b"RIFF")
        await store.put_file("k", path, content_type="audio/wav", metadata={})
    assert "CALLVAULT_STS_ENDPOINTS" in refused.value.reason
    assert customer_host.received == []


async def test_sts_goes_to_the_allowed_endpoint_and_ignores_environment_proxies(
    customer_host: Receiver,
    environment_proxy: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    # the operator allows this endpoint's STS; a proxy in the environment must still be ignored
    set_storage_env(monkeypatch, "CALLVAULT_STS_ENDPOINTS", customer_host.url)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, environment_proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    store = open_custom_store(
        "s3-generic", role_configuration(customer_host.url), allow_private_networks=True
    )
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF")
    with pytest.raises(StorageError):  # the "STS" answers no credentials
        await store.put_file("k", path, content_type="audio/wav", metadata={})
    assert environment_proxy.received == []
    assert customer_host.received, "AssumeRole went to the allowed endpoint"
    assert all(b"AssumeRole" in r.body for r in customer_host.received)
