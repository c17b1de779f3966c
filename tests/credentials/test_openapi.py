"""/v2/openapi.json describes the configuration API truthfully: every operation is there with
its id, security and Telnyx error bodies, and real answers validate against its schemas."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs
import pytest

from callvault.accounts.service import NewAccount
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.credentials.samples import BACKENDS, body
from tests.servers import ServiceAccount

OPERATIONS = {
    ("get", "/v2/webhook_signing_key"): "GetWebhookSigningKey",
    ("post", "/v2/call_control_applications"): "CreateCallControlApplication",
    ("get", "/v2/call_control_applications"): "ListCallControlApplications",
    ("get", "/v2/call_control_applications/{id}"): "RetrieveCallControlApplication",
    ("patch", "/v2/call_control_applications/{id}"): "UpdateCallControlApplication",
    ("delete", "/v2/call_control_applications/{id}"): "DeleteCallControlApplication",
    ("post", "/v2/custom_storage_credentials/{connection_id}"): "CreateCustomStorageCredentials",
    ("get", "/v2/custom_storage_credentials/{connection_id}"): "GetCustomStorageCredentials",
    ("put", "/v2/custom_storage_credentials/{connection_id}"): "UpdateCustomStorageCredentials",
    (
        "delete",
        "/v2/custom_storage_credentials/{connection_id}",
    ): "DeleteCustomStorageCredentials",
    (
        "post",
        "/v2/custom_storage_credentials/{connection_id}/actions/validate",
    ): "ValidateCustomStorageCredentials",
}


@pytest.fixture
async def spec(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/v2/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


class Checker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        responses = self.spec["paths"][path][method]["responses"]
        content = responses[str(status)]["content"]["application/json"]
        # a root that holds the components, so every $ref resolves
        return {**content["schema"], "components": self.spec["components"]}

    def request_schema(self, method: str, path: str) -> dict[str, Any]:
        content = self.spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        return {**content["schema"], "components": self.spec["components"]}

    def check(self, method: str, path: str, response: httpx.Response) -> None:
        schema = self.schema(method, path, response.status_code)
        jsonschema_rs.validator_for(schema).validate(response.json())

    def check_request(self, method: str, path: str, sent: dict[str, Any]) -> None:
        jsonschema_rs.validator_for(self.request_schema(method, path)).validate(sent)


def test_every_operation_is_described_with_auth_and_telnyx_errors(
    spec: dict[str, Any],
) -> None:
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for (method, path), operation_id in OPERATIONS.items():
        operation = spec["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation["tags"]
        assert operation["security"] == [{"HTTPBearer": []}]
        # FastAPI's own 422 shape (HTTPValidationError) must never be what we document
        statuses = ["401"] + (["422"] if operation_id != "GetWebhookSigningKey" else [])
        for status in statuses:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorsBody"}, (operation_id, status)
    delete = spec["paths"]["/v2/custom_storage_credentials/{connection_id}"]["delete"]
    assert "content" not in delete["responses"]["204"]
    assert (
        "409"
        in spec["paths"]["/v2/custom_storage_credentials/{connection_id}"]["post"]["responses"]
    )


async def test_application_answers_match_the_spec(
    api: httpx.AsyncClient, account: NewAccount, spec: dict[str, Any]
) -> None:
    checker = Checker(spec)
    headers = auth(account)
    sent = {
        "application_name": "documented",
        "webhook_event_url": "https://hooks.example.com/",
        "webhook_event_failover_url": "",
    }
    checker.check_request("post", "/v2/call_control_applications", sent)
    response = await api.post("/v2/call_control_applications", json=sent, headers=headers)
    checker.check("post", "/v2/call_control_applications", response)
    app_id = response.json()["data"]["id"]
    item = "/v2/call_control_applications/{id}"
    checker.check(
        "get", item, await api.get(f"/v2/call_control_applications/{app_id}", headers=headers)
    )
    response = await api.get("/v2/call_control_applications", headers=headers)
    checker.check("get", "/v2/call_control_applications", response)
    response = await api.patch(
        f"/v2/call_control_applications/{app_id}", json={"active": False}, headers=headers
    )
    checker.check("patch", item, response)
    response = await api.patch(
        f"/v2/call_control_applications/{app_id}", json={"active": "no"}, headers=headers
    )
    assert response.status_code == 422
    checker.check("patch", item, response)
    response = await api.delete(f"/v2/call_control_applications/{app_id}", headers=headers)
    checker.check("delete", item, response)
    response = await api.get(f"/v2/call_control_applications/{app_id}", headers=headers)
    assert response.status_code == 404
    checker.check("get", item, response)
    response = await api.get("/v2/call_control_applications")
    assert response.status_code == 401
    checker.check("get", "/v2/call_control_applications", response)
    response = await api.get("/v2/webhook_signing_key", headers=headers)
    checker.check("get", "/v2/webhook_signing_key", response)


async def test_credentials_answers_match_the_spec(
    api: httpx.AsyncClient,
    account: NewAccount,
    spec: dict[str, Any],
    gcs_service_account: ServiceAccount,
) -> None:
    checker = Checker(spec)
    headers = auth(account)
    path = "/v2/custom_storage_credentials/{connection_id}"
    for backend in BACKENDS:
        connection_id = (await create_application(api, account))["id"]
        url = f"/v2/custom_storage_credentials/{connection_id}"
        sent = body(backend, gcs_service_account)
        checker.check_request("post", path, sent)
        response = await api.post(url, json=sent, headers=headers)
        checker.check("post", path, response)
        checker.check("get", path, await api.get(url, headers=headers))
        checker.check("put", path, await api.put(url, json=sent, headers=headers))
        response = await api.post(url, json=sent, headers=headers)
        assert response.status_code == 409
        checker.check("post", path, response)
        bad = body(backend, gcs_service_account, bucket="x")
        response = await api.put(url, json=bad, headers=headers)
        assert response.status_code == 422
        checker.check("put", path, response)
    response = await api.get("/v2/custom_storage_credentials/1", headers=headers)
    assert response.status_code == 404
    checker.check("get", path, response)
