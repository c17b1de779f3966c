"""/v2/custom_storage_credentials/{connection_id} end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.credentials import events, service
from callvault.runtime import Runtime
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.credentials.samples import BACKENDS, SECRET_FIELD, body, configuration, mask
from tests.servers import ServiceAccount

BASE = "/v2/custom_storage_credentials"


def only_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


def masked(backend: str, config: dict[str, Any]) -> dict[str, Any]:
    secret = SECRET_FIELD[backend]
    return {**config, secret: mask(config[secret]), "backend": backend}


async def stored(runtime: Runtime, connection_id: str) -> service.StoredCredentials | None:
    async with runtime.sessions() as session:
        return await service.load_configuration(session, runtime.settings.keyring, connection_id)


@pytest.fixture
async def connection_id(api: httpx.AsyncClient, account: NewAccount) -> str:
    return str((await create_application(api, account))["id"])


@pytest.mark.parametrize("backend", BACKENDS)
async def test_crud_on_every_backend(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    backend: str,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    first = body(backend, gcs_service_account)

    response = await api.post(url, json=first, headers=headers)
    assert response.status_code == 200, response.text
    expected = {
        "connection_id": connection_id,
        "record_type": "custom_storage_credentials",
        "data": {"backend": backend, "configuration": masked(backend, first["configuration"])},
    }
    assert response.json() == expected
    assert (await api.get(url, headers=headers)).json() == expected

    loaded = await stored(runtime, connection_id)
    assert loaded == service.StoredCredentials(
        backend=backend,
        configuration=first["configuration"],
        revision=1,
        account_id=account.account_id,
    )

    second = body(backend, gcs_service_account)
    response = await api.put(url, json=second, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["configuration"] == masked(backend, second["configuration"])
    assert (await api.get(url, headers=headers)).json() == response.json()
    loaded = await stored(runtime, connection_id)
    assert loaded is not None
    assert loaded.configuration == second["configuration"] and loaded.revision == 2

    response = await api.delete(url, headers=headers)
    assert response.status_code == 204
    assert response.content == b""
    response = await api.get(url, headers=headers)
    assert response.status_code == 404
    assert only_error(response)["source"] == {"pointer": "/connection_id"}
    assert await stored(runtime, connection_id) is None
    assert (await api.delete(url, headers=headers)).status_code == 404


async def test_backend_can_change_on_put_and_the_inner_backend_may_be_sent(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    first = body("s3", gcs_service_account)
    first["configuration"]["backend"] = "s3"
    assert (await api.post(url, json=first, headers=headers)).status_code == 200
    second = body("azure", gcs_service_account)
    response = await api.put(url, json=second, headers=headers)
    assert response.status_code == 200
    assert response.json()["data"]["backend"] == "azure"
    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.backend == "azure"
    assert loaded.configuration == second["configuration"]


async def test_s3_generic_endpoint_loses_its_trailing_slash(
    api: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    sent = body(
        "s3-generic", gcs_service_account, endpoint="https://xyz.supabase.co/storage/v1/s3/"
    )
    response = await api.post(f"{BASE}/{connection_id}", json=sent, headers=auth(account))
    assert response.json()["data"]["configuration"]["endpoint"] == (
        "https://xyz.supabase.co/storage/v1/s3"
    )


async def test_post_when_credentials_exist_is_409_and_changes_nothing(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    first = body("s3", gcs_service_account)
    assert (await api.post(url, json=first, headers=headers)).status_code == 200
    response = await api.post(url, json=body("gcs", gcs_service_account), headers=headers)
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"
    assert only_error(response)["source"] == {"pointer": "/connection_id"}
    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.configuration == first["configuration"]


async def test_put_without_credentials_is_404(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    response = await api.put(
        f"{BASE}/{connection_id}", json=body("s3", gcs_service_account), headers=auth(account)
    )
    assert response.status_code == 404
    assert only_error(response)["source"] == {"pointer": "/connection_id"}
    assert await stored(runtime, connection_id) is None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_masked_secret_sent_back_keeps_the_stored_secret(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    backend: str,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    original = body(backend, gcs_service_account)
    await api.post(url, json=original, headers=headers)

    # read-modify-write, as a client that never saw the secret does
    shown = (await api.get(url, headers=headers)).json()["data"]
    shown["configuration"]["bucket"] = "renamed-bucket"
    response = await api.put(url, json=shown, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == shown

    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.revision == 2
    secret = SECRET_FIELD[backend]
    assert loaded.configuration[secret] == original["configuration"][secret]
    assert loaded.configuration["bucket"] == "renamed-bucket"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_mask_of_something_else_is_refused(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    backend: str,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    secret = SECRET_FIELD[backend]
    guess = body(backend, gcs_service_account)
    guess["configuration"][secret] = "*" * 20 + "abcd"

    # POST has nothing stored to keep
    response = await api.post(url, json=guess, headers=headers)
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == f"/configuration/{secret}"
    assert await stored(runtime, connection_id) is None

    original = body(backend, gcs_service_account)
    await api.post(url, json=original, headers=headers)
    response = await api.put(url, json=guess, headers=headers)
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == f"/configuration/{secret}"
    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.configuration == original["configuration"]
    assert loaded.revision == 1


async def test_put_calls_the_credentials_replaced_hook_after_commit(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, int | None]] = []

    async def record(hook_runtime: Runtime, hooked_connection: str) -> None:
        # the new revision must already be visible to the hook's own session
        loaded = await stored(hook_runtime, hooked_connection)
        calls.append((hooked_connection, loaded.revision if loaded else None))

    monkeypatch.setattr(events, "on_credentials_replaced", record)
    url, headers = f"{BASE}/{connection_id}", auth(account)
    await api.post(url, json=body("s3", gcs_service_account), headers=headers)
    assert calls == []  # a first configuration replaces nothing
    await api.put(url, json=body("s3", gcs_service_account), headers=headers)
    assert calls == [(connection_id, 2)]
    bad = body("s3", gcs_service_account, bucket="Bad_Bucket")
    assert (await api.put(url, json=bad, headers=headers)).status_code == 422
    assert calls == [(connection_id, 2)]


# ---- bad input: 422 at the offending field, nothing stored


def _without(backend: str, field: str) -> Any:
    def build(sa: ServiceAccount) -> dict[str, Any]:
        sent = body(backend, sa)
        del sent["configuration"][field]
        return sent

    return build


def _with(backend: str, **overrides: Any) -> Any:
    return lambda sa: body(backend, sa, **overrides)


def _gcs_key(**changes: Any) -> Any:
    def build(sa: ServiceAccount) -> dict[str, Any]:
        info: dict[str, Any] = {**sa.info, **changes}
        info = {k: v for k, v in info.items() if v is not None}
        return body("gcs", sa, credentials=json.dumps(info))

    return build


BAD_INPUT = {
    "s3 missing secret": (
        _without("s3", "aws_secret_access_key"),
        "/configuration/aws_secret_access_key",
    ),
    "s3 missing bucket": (_without("s3", "bucket"), "/configuration/bucket"),
    "s3-generic missing endpoint": (_without("s3-generic", "endpoint"), "/configuration/endpoint"),
    "gcs missing credentials": (_without("gcs", "credentials"), "/configuration/credentials"),
    "azure missing account_name": (
        _without("azure", "account_name"),
        "/configuration/account_name",
    ),
    "s3 secret not a string": (
        _with("s3", aws_secret_access_key=12345),
        "/configuration/aws_secret_access_key",
    ),
    "s3 region not a string": (_with("s3", region=["us-east-1"]), "/configuration/region"),
    "azure key not a string": (_with("azure", account_key=None), "/configuration/account_key"),
    "s3 empty access key": (_with("s3", aws_access_key_id=""), "/configuration/aws_access_key_id"),
    "s3 bad bucket": (_with("s3", bucket="Recordings_2024"), "/configuration/bucket"),
    "s3 reserved bucket": (_with("s3", bucket="xn--recordings"), "/configuration/bucket"),
    "s3-generic bad bucket": (_with("s3-generic", bucket="ab"), "/configuration/bucket"),
    "gcs bad bucket": (_with("gcs", bucket="google-recordings"), "/configuration/bucket"),
    "azure bad bucket": (_with("azure", bucket="rec--ordings"), "/configuration/bucket"),
    "s3 bad region": (_with("s3", region="US East"), "/configuration/region"),
    "s3-generic bad region": (_with("s3-generic", region="eu west/1"), "/configuration/region"),
    "azure bad base64": (_with("azure", account_key="not base64!!"), "/configuration/account_key"),
    "azure bad account name": (
        _with("azure", account_name="My_Account"),
        "/configuration/account_name",
    ),
    "gcs not json": (_with("gcs", credentials="{not json"), "/configuration/credentials"),
    "gcs json list": (_with("gcs", credentials="[1, 2]"), "/configuration/credentials"),
    "gcs wrong type": (_gcs_key(type="authorized_user"), "/configuration/credentials"),
    "gcs no private key": (_gcs_key(private_key=None), "/configuration/credentials"),
    "gcs no client email": (_gcs_key(client_email=""), "/configuration/credentials"),
    "s3-generic endpoint not a url": (
        _with("s3-generic", endpoint="s3.example.com"),
        "/configuration/endpoint",
    ),
    "s3-generic endpoint ftp": (
        _with("s3-generic", endpoint="ftp://s3.example.com"),
        "/configuration/endpoint",
    ),
    "s3-generic endpoint with query": (
        _with("s3-generic", endpoint="https://s3.example.com/?x=1"),
        "/configuration/endpoint",
    ),
    "s3 unknown field": (_with("s3", endpoint="https://s3.example.com"), "/configuration/endpoint"),
    "unknown backend": (lambda sa: {**body("s3", sa), "backend": "ftp"}, "/backend"),
    "missing backend": (lambda sa: {"configuration": configuration("s3", sa)}, "/backend"),
    "missing configuration": (lambda sa: {"backend": "s3"}, "/configuration"),
    "configuration not an object": (
        lambda sa: {"backend": "s3", "configuration": "x"},
        "/configuration",
    ),
    "mismatched inner backend": (
        lambda sa: {
            "backend": "s3",
            "configuration": {**configuration("s3", sa), "backend": "gcs"},
        },
        "/configuration/backend",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_is_422_at_the_field_and_stores_nothing(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    case: str,
) -> None:
    build, pointer = BAD_INPUT[case]
    sent = build(gcs_service_account)
    url, headers = f"{BASE}/{connection_id}", auth(account)

    response = await api.post(url, json=sent, headers=headers)
    assert response.status_code == 422, response.text
    error = only_error(response)
    assert error["code"] == "10015"
    assert error["source"]["pointer"] == pointer
    assert await stored(runtime, connection_id) is None
    # no secret is echoed in the error
    inner = sent.get("configuration")
    for value in inner.values() if isinstance(inner, dict) else ():
        if isinstance(value, str) and len(value) >= 16:
            assert value not in response.text

    # PUT refuses the same and leaves the stored configuration alone
    good = body("s3", gcs_service_account)
    assert (await api.post(url, json=good, headers=headers)).status_code == 200
    response = await api.put(url, json=sent, headers=headers)
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == pointer
    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.configuration == good["configuration"]
    assert loaded.revision == 1


async def test_broken_json_is_400_and_stores_nothing(
    api: httpx.AsyncClient, account: NewAccount, runtime: Runtime, connection_id: str
) -> None:
    headers = {**auth(account), "Content-Type": "application/json"}
    response = await api.post(
        f"{BASE}/{connection_id}", content=b'{"backend": "s3", "configuration": {', headers=headers
    )
    assert response.status_code == 400
    assert only_error(response)["code"] == "10015"
    assert await stored(runtime, connection_id) is None


# ---- tenancy


async def test_unknown_connection_is_404_at_connection_id(
    api: httpx.AsyncClient, account: NewAccount, gcs_service_account: ServiceAccount
) -> None:
    url, headers = f"{BASE}/1684641123236054244", auth(account)
    sent = body("s3", gcs_service_account)
    for response in (
        await api.post(url, json=sent, headers=headers),
        await api.get(url, headers=headers),
        await api.put(url, json=sent, headers=headers),
        await api.delete(url, headers=headers),
        await api.post(f"{url}/actions/validate", headers=headers),
    ):
        assert response.status_code == 404
        assert only_error(response) == {
            "code": "10005",
            "title": "Resource not found",
            "detail": "The requested resource or URL could not be found.",
            "source": {"pointer": "/connection_id"},
        }


async def test_one_account_never_sees_or_changes_anothers_credentials(
    api: httpx.AsyncClient,
    account: NewAccount,
    other_account: NewAccount,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
) -> None:
    # one connection with credentials, one without
    with_credentials = (await create_application(api, account))["id"]
    without_credentials = (await create_application(api, account))["id"]
    original = body("azure", gcs_service_account)
    await api.post(f"{BASE}/{with_credentials}", json=original, headers=auth(account))

    intruder = auth(other_account)
    attempt = body("s3", gcs_service_account)
    for connection in (with_credentials, without_credentials):
        url = f"{BASE}/{connection}"
        for response in (
            await api.get(url, headers=intruder),
            await api.post(url, json=attempt, headers=intruder),
            await api.put(url, json=attempt, headers=intruder),
            await api.delete(url, headers=intruder),
            await api.post(f"{url}/actions/validate", headers=intruder),
        ):
            assert response.status_code == 404
            assert only_error(response)["source"] == {"pointer": "/connection_id"}

    loaded = await stored(runtime, with_credentials)
    assert loaded is not None and loaded.configuration == original["configuration"]
    assert await stored(runtime, without_credentials) is None


async def test_deleting_the_application_deletes_its_credentials(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
) -> None:
    headers = auth(account)
    await api.post(
        f"{BASE}/{connection_id}", json=body("gcs", gcs_service_account), headers=headers
    )
    response = await api.delete(f"/v2/call_control_applications/{connection_id}", headers=headers)
    assert response.status_code == 200
    assert await stored(runtime, connection_id) is None
    assert (await api.get(f"{BASE}/{connection_id}", headers=headers)).status_code == 404


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_every_operation_needs_a_valid_api_key(
    api: httpx.AsyncClient, connection_id: str, method: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer KEYnope"}):
        response = await api.request(method, f"{BASE}/{connection_id}", json={}, headers=headers)
        assert response.status_code == 401
    response = await api.post(f"{BASE}/{connection_id}/actions/validate")
    assert response.status_code == 401


# ---- the address policy on s3-generic endpoints


@pytest.fixture
async def strict_api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    strict = dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, allow_private_networks=False)
    )
    transport = httpx.ASGITransport(app=create_app(strict), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        yield client


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:8333", "http://localhost:9000", "https://10.20.30.40"]
)
async def test_private_s3_endpoints_are_refused_unless_allowed(
    strict_api: httpx.AsyncClient,
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    connection_id: str,
    gcs_service_account: ServiceAccount,
    endpoint: str,
) -> None:
    url, headers = f"{BASE}/{connection_id}", auth(account)
    sent = body("s3-generic", gcs_service_account, endpoint=endpoint)
    response = await strict_api.post(url, json=sent, headers=headers)
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == "/configuration/endpoint"
    assert "CALLVAULT_ALLOW_PRIVATE_NETWORKS" in only_error(response)["detail"]
    assert await stored(runtime, connection_id) is None

    public = body("s3-generic", gcs_service_account, endpoint="https://8.8.8.8")
    assert (await strict_api.post(url, json=public, headers=headers)).status_code == 200
    response = await strict_api.put(url, json=sent, headers=headers)
    assert response.status_code == 422
    loaded = await stored(runtime, connection_id)
    assert loaded is not None and loaded.configuration == public["configuration"]

    # allowed by the operator: accepted
    assert (await api.put(url, json=copy.deepcopy(sent), headers=headers)).status_code == 200
