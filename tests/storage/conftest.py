"""Per-backend test cases against the real servers of tests/servers.py.

A `Backend` opens stores exactly as production does (`open_custom_store` with the Telnyx-shaped
configuration; the endpoint overrides come from the environment, as in a deployment), creates
a fresh bucket per test, and knows how to spell "the wrong secret" for its provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from callvault.storage import LocalStore, ObjectStore, open_custom_store
from tests.servers import (
    Azurite,
    FakeGCS,
    GcsAuthGateway,
    SeaweedFS,
    ServiceAccount,
    make_service_account,
)
from tests.storage.environment import set_storage_env

CUSTOM_BACKENDS = ["s3", "s3-generic", "azure", "gcs"]


@dataclass
class Backend:
    name: str
    configuration: Callable[[str], dict[str, Any]]  # bucket -> configuration
    create_bucket: Callable[[str], None]
    secret_field: str
    wrong_secret: str
    server: Any = None
    secrets: list[str] = field(default_factory=list)

    def new_bucket(self) -> str:
        name = f"cv-{uuid.uuid4().hex[:12]}"
        self.create_bucket(name)
        return name

    def open(self, bucket: str | None = None, **overrides: Any) -> ObjectStore:
        timeout = overrides.pop("timeout_secs", None)
        configuration = {**self.configuration(bucket or self.new_bucket()), **overrides}
        return open_custom_store(
            self.name, configuration, timeout_secs=timeout, allow_private_networks=True
        )

    def open_with_wrong_secret(self, bucket: str) -> ObjectStore:
        return self.open(bucket, **{self.secret_field: self.wrong_secret})


def s3_backend(name: str, server: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if name == "s3":
        # production code reaches "AWS" through this override, path style
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)

    def configuration(bucket: str) -> dict[str, Any]:
        config = {
            "bucket": bucket,
            "region": "us-east-1",
            "aws_access_key_id": server.access_key,
            "aws_secret_access_key": server.secret_key,
        }
        if name == "s3-generic":
            config["endpoint"] = server.endpoint
        return config

    return Backend(
        name,
        configuration,
        server.create_bucket,
        "aws_secret_access_key",
        "wrong-secret-key-0123456789",
        server,
        [server.secret_key],
    )


def azure_backend(server: Azurite, monkeypatch: pytest.MonkeyPatch) -> Backend:
    set_storage_env(monkeypatch, "CALLVAULT_AZURE_BLOB_ENDPOINT", server.endpoint_template)
    return Backend(
        "azure",
        lambda bucket: {
            "bucket": bucket,
            "account_name": server.account_name,
            "account_key": server.account_key,
        },
        server.create_container,
        "account_key",
        # valid base64, wrong key
        "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==",
        server,
        [server.account_key],
    )


def gcs_backend(
    emulator: FakeGCS,
    gateway: GcsAuthGateway,
    account: ServiceAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> Backend:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gateway.endpoint)
    # same client_email, another private key: what a rotated-away key looks like to GCS
    impostor = make_service_account()
    return Backend(
        "gcs",
        lambda bucket: {"bucket": bucket, "credentials": account.json},
        emulator.create_bucket,
        "credentials",
        impostor.json,
        gateway,
        [account.private_key, impostor.private_key],
    )


def backend_for(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    """The backend `name` on the session's server (started on first use), the process's
    endpoint overrides pointed at it for this test."""
    if name in ("s3", "s3-generic"):
        return s3_backend(name, request.getfixturevalue("seaweedfs"), monkeypatch)
    if name == "azure":
        return azure_backend(request.getfixturevalue("azurite"), monkeypatch)
    if name == "gcs":
        return gcs_backend(
            request.getfixturevalue("fake_gcs"),
            request.getfixturevalue("gcs_gateway"),
            request.getfixturevalue("gcs_service_account"),
            monkeypatch,
        )
    raise ValueError(name)


@pytest.fixture
def make_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Backend]:
    def make(name: str) -> Backend:
        return backend_for(name, request, monkeypatch)

    return make


@pytest.fixture(params=CUSTOM_BACKENDS)
def backend(request: pytest.FixtureRequest, make_backend: Callable[[str], Backend]) -> Backend:
    return make_backend(request.param)


LINK_SECRET = b"test-link-secret-0123456789abcdef"


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "recordings", "https://vault.test", LINK_SECRET)


@pytest.fixture(params=[*CUSTOM_BACKENDS, "local"])
def any_store(
    request: pytest.FixtureRequest, make_backend: Callable[[str], Backend], local_store: LocalStore
) -> Iterator[ObjectStore]:
    """A store on a fresh bucket, for every backend including the local default store."""
    if request.param == "local":
        yield local_store
    else:
        yield make_backend(request.param).open()
