"""POST …/actions/validate probes the stored settings against real storage servers."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.servers import (
    Azurite,
    FakeGCS,
    GcsAuthGateway,
    SeaweedFS,
    ServiceAccount,
    make_service_account,
)

BASE = "/v2/custom_storage_credentials"


def seaweed_configuration(server: SeaweedFS, bucket: str, **overrides: Any) -> dict[str, Any]:
    return {
        "backend": "s3-generic",
        "configuration": {
            "bucket": bucket,
            "region": server.region,
            "endpoint": server.endpoint,
            "aws_access_key_id": server.access_key,
            "aws_secret_access_key": server.secret_key,
            **overrides,
        },
    }


async def configure_and_validate(
    api: httpx.AsyncClient, account: NewAccount, sent: dict[str, Any]
) -> dict[str, Any]:
    connection_id = (await create_application(api, account))["id"]
    url = f"{BASE}/{connection_id}"
    response = await api.post(url, json=sent, headers=auth(account))
    assert response.status_code == 200, response.text
    response = await api.post(f"{url}/actions/validate", headers=auth(account))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="session")
def seaweed_bucket(seaweedfs: SeaweedFS) -> str:
    name = f"validate-{secrets.token_hex(4)}"
    seaweedfs.create_bucket(name)
    return name


async def test_s3_generic_ok(
    api: httpx.AsyncClient, account: NewAccount, seaweedfs: SeaweedFS, seaweed_bucket: str
) -> None:
    result = await configure_and_validate(
        api, account, seaweed_configuration(seaweedfs, seaweed_bucket)
    )
    assert result == {"data": {"status": "ok"}}


async def test_s3_generic_wrong_secret(
    api: httpx.AsyncClient, account: NewAccount, seaweedfs: SeaweedFS, seaweed_bucket: str
) -> None:
    wrong = "wrong-secret-" + secrets.token_hex(12)
    result = await configure_and_validate(
        api,
        account,
        seaweed_configuration(seaweedfs, seaweed_bucket, aws_secret_access_key=wrong),
    )
    assert result["data"]["status"] == "failed"
    assert seaweed_bucket in result["data"]["detail"]
    assert wrong not in result["data"]["detail"]


async def test_s3_generic_missing_bucket(
    api: httpx.AsyncClient, account: NewAccount, seaweedfs: SeaweedFS
) -> None:
    missing = f"missing-{secrets.token_hex(4)}"
    result = await configure_and_validate(api, account, seaweed_configuration(seaweedfs, missing))
    assert result["data"]["status"] == "failed"
    assert missing in result["data"]["detail"]


async def test_azure_ok_and_wrong_key(
    api: httpx.AsyncClient, account: NewAccount, azure_endpoint_env: Azurite
) -> None:
    container = f"validate-{secrets.token_hex(4)}"
    azure_endpoint_env.create_container(container)
    good = {
        "backend": "azure",
        "configuration": {
            "bucket": container,
            "account_name": azure_endpoint_env.account_name,
            "account_key": azure_endpoint_env.account_key,
        },
    }
    assert await configure_and_validate(api, account, good) == {"data": {"status": "ok"}}
    bad = {
        "backend": "azure",
        "configuration": {**good["configuration"], "account_key": "d3Jvbmcta2V5LXdyb25nLWtleQ=="},
    }
    result = await configure_and_validate(api, account, bad)
    assert result["data"]["status"] == "failed"


async def test_gcs_ok_and_unknown_key(
    api: httpx.AsyncClient,
    account: NewAccount,
    fake_gcs: FakeGCS,
    gcs_emulator_env: GcsAuthGateway,
    gcs_service_account: ServiceAccount,
) -> None:
    bucket = f"validate-{secrets.token_hex(4)}"
    fake_gcs.create_bucket(bucket)
    sent = {
        "backend": "gcs",
        "configuration": {"bucket": bucket, "credentials": gcs_service_account.json},
    }
    assert await configure_and_validate(api, account, sent) == {"data": {"status": "ok"}}
    # a well-formed key the (emulated) GCS does not know
    stranger = make_service_account()
    sent["configuration"]["credentials"] = stranger.json
    result = await configure_and_validate(api, account, sent)
    assert result["data"]["status"] == "failed"
    assert stranger.private_key.splitlines()[1] not in result["data"]["detail"]


@pytest.mark.parametrize("universe", ["example.com", "", 7])
async def test_gcs_key_of_another_universe_is_refused_at_save(
    api: httpx.AsyncClient, account: NewAccount, universe: Any
) -> None:
    """Saved, such a key made validate answer 500 (the client refuses the universe at its
    first request): it is refused with 422 at save (issue 21)."""
    connection_id = (await create_application(api, account))["id"]
    key = make_service_account()
    sent = {
        "backend": "gcs",
        "configuration": {
            "bucket": "recordings",
            "credentials": json.dumps({**key.info, "universe_domain": universe}),
        },
    }
    response = await api.post(f"{BASE}/{connection_id}", json=sent, headers=auth(account))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["source"]["pointer"] == "/configuration/credentials"
    assert "universe_domain" in error["detail"]
    assert key.private_key.splitlines()[1] not in response.text
    # the default universe, said explicitly, is fine
    default = {**key.info, "universe_domain": "googleapis.com"}
    sent["configuration"]["credentials"] = json.dumps(default)
    response = await api.post(f"{BASE}/{connection_id}", json=sent, headers=auth(account))
    assert response.status_code == 200, response.text
