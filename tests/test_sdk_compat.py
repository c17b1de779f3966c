"""The official Telnyx Python SDK, pointed at a real callvault server, configures storage.

Parsing goes through the SDK's own models, so a field we answer with the wrong shape or type
shows up here as a wrong value or a wrong model class.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import telnyx
from telnyx.types import (
    AzureConfigurationData,
    CallControlApplication,
    CredentialsResponse,
    GcsConfigurationData,
    S3ConfigurationData,
    S3GenericConfigurationData,
)

from callvault.accounts.service import NewAccount
from callvault.config import Settings
from tests.conftest import LiveServer, conforms_to_spec
from tests.credentials.samples import BACKENDS, SECRET_FIELD, configuration, mask
from tests.servers import ServiceAccount

MODELS = {
    "s3": S3ConfigurationData,
    "s3-generic": S3GenericConfigurationData,
    "gcs": GcsConfigurationData,
    "azure": AzureConfigurationData,
}


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    # the API only: these tests do not need the worker
    live = LiveServer(settings, run_worker=False).start()
    yield live
    live.stop()


@pytest.fixture
async def client(server: LiveServer, account: NewAccount) -> telnyx.AsyncTelnyx:
    # the SDK's base URL includes /v2 (its default is https://api.telnyx.com/v2)
    return telnyx.AsyncTelnyx(
        api_key=account.api_key,
        base_url=f"{server.url}/v2",
        max_retries=0,
        timeout=20,
        # every answer is also checked against Telnyx's schemas
        http_client=httpx.AsyncClient(event_hooks={"response": [conforms_to_spec]}),
    )


def expect_configuration(
    response: CredentialsResponse, connection_id: str, backend: str, sent: dict[str, Any]
) -> None:
    assert response.connection_id == connection_id
    assert response.record_type == "custom_storage_credentials"
    assert response.data.backend == backend
    parsed = response.data.configuration
    assert isinstance(parsed, MODELS[backend])
    assert parsed.backend == backend
    secret = SECRET_FIELD[backend]
    for name, value in sent.items():
        expected = mask(value) if name == secret else value
        assert getattr(parsed, name) == expected, name


async def test_sdk_manages_applications(client: telnyx.AsyncTelnyx) -> None:
    created = await client.call_control_applications.create(
        application_name="sdk-app",
        webhook_event_url="https://hooks.example.com/telnyx",
        webhook_event_failover_url="https://failover.example.com/telnyx",
        webhook_api_version="2",
        webhook_timeout_secs=10,
        dtmf_type="Inband",
        inbound={"channel_limit": 5},
    )
    application = created.data
    assert isinstance(application, CallControlApplication)
    assert application.id is not None and len(application.id) == 19
    assert application.record_type == "call_control_application"
    assert application.webhook_api_version == "2"
    assert application.webhook_timeout_secs == 10
    assert application.active is True
    assert application.dtmf_type == "Inband"
    assert application.inbound is not None and application.inbound.channel_limit == 5

    fetched = await client.call_control_applications.retrieve(application.id)
    assert fetched.data == application

    updated = await client.call_control_applications.update(
        application.id,
        application_name="sdk-app-renamed",
        webhook_event_url="https://hooks.example.com/v2",
    )
    assert updated.data is not None
    assert updated.data.application_name == "sdk-app-renamed"
    assert updated.data.webhook_timeout_secs == 10

    others = [
        (
            await client.call_control_applications.create(
                application_name=f"sdk-{n}", webhook_event_url="https://hooks.example.com/"
            )
        ).data
        for n in range(2)
    ]
    # auto-pagination follows meta.page_number / total_pages across pages of one
    listed = [item.id async for item in client.call_control_applications.list(page_size=1)]
    assert sorted(listed) == sorted([application.id] + [o.id for o in others if o and o.id])

    deleted = await client.call_control_applications.delete(application.id)
    assert deleted.data is not None and deleted.data.id == application.id
    with pytest.raises(telnyx.NotFoundError):
        await client.call_control_applications.retrieve(application.id)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sdk_manages_storage_credentials(
    client: telnyx.AsyncTelnyx, gcs_service_account: ServiceAccount, backend: str
) -> None:
    app = (
        await client.call_control_applications.create(
            application_name="recorder", webhook_event_url="https://hooks.example.com/telnyx"
        )
    ).data
    assert app is not None and app.id is not None
    connection_id = app.id

    first = configuration(backend, gcs_service_account)
    created = await client.custom_storage_credentials.create(
        connection_id,
        backend=backend,
        configuration={"backend": backend, **first},  # type: ignore[arg-type]
    )
    expect_configuration(created, connection_id, backend, first)

    retrieved = await client.custom_storage_credentials.retrieve(connection_id)
    assert retrieved == created

    # update with the masked secret as retrieved: the stored secret is kept
    shown = retrieved.data.configuration.model_dump()
    shown["bucket"] = "renamed-" + first["bucket"][-8:]
    updated = await client.custom_storage_credentials.update(
        connection_id,
        backend=backend,
        configuration=shown,  # type: ignore[arg-type]
    )
    expect_configuration(
        updated,
        connection_id,
        backend,
        {k: v for k, v in {**first, "bucket": shown["bucket"]}.items()},
    )

    second = configuration(backend, gcs_service_account)
    replaced = await client.custom_storage_credentials.update(
        connection_id,
        backend=backend,
        configuration={"backend": backend, **second},  # type: ignore[arg-type]
    )
    expect_configuration(replaced, connection_id, backend, second)

    with pytest.raises(telnyx.ConflictError):
        await client.custom_storage_credentials.create(
            connection_id,
            backend=backend,
            configuration={"backend": backend, **second},  # type: ignore[arg-type]
        )

    assert await client.custom_storage_credentials.delete(connection_id) is None
    with pytest.raises(telnyx.NotFoundError) as missing:
        await client.custom_storage_credentials.retrieve(connection_id)
    assert missing.value.status_code == 404
    body = missing.value.body
    assert isinstance(body, dict)
    assert body["errors"][0]["code"] == "10005"


async def test_sdk_sees_validation_errors(
    client: telnyx.AsyncTelnyx, gcs_service_account: ServiceAccount
) -> None:
    app = (
        await client.call_control_applications.create(
            application_name="recorder", webhook_event_url="https://hooks.example.com/telnyx"
        )
    ).data
    assert app is not None and app.id is not None
    bad = configuration("s3", gcs_service_account, bucket="Not_A_Bucket")
    with pytest.raises(telnyx.UnprocessableEntityError) as refused:
        await client.custom_storage_credentials.create(
            app.id,
            backend="s3",
            configuration={"backend": "s3", **bad},  # type: ignore[arg-type]
        )
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["errors"][0]["source"] == {"pointer": "/configuration/bucket"}
    assert json.dumps(body).find(bad["aws_secret_access_key"]) == -1

    unauthorized = telnyx.AsyncTelnyx(
        api_key="KEYwrong", base_url=str(client.base_url), max_retries=0
    )
    with pytest.raises(telnyx.AuthenticationError):
        await unauthorized.custom_storage_credentials.retrieve(app.id)
