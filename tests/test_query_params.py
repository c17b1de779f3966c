"""Nothing silently ignored: every /v2 operation refuses a query parameter it does not know
(400, `source.parameter` naming it), and the OpenAPI document lists what each one knows."""

from __future__ import annotations

import re
from typing import Any

import httpx

from callvault.accounts.service import NewAccount
from tests.conformance import spec
from tests.conftest import auth


def v2_operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        if path.startswith("/v2/")
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    ]


async def test_every_v2_operation_refuses_an_unknown_parameter(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    openapi = (await api.get("/v2/openapi.json")).json()
    operations = v2_operations(openapi)
    assert len(operations) >= 15
    for method, template in operations:
        path = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", template)
        response = await api.request(
            method,
            path,
            params={"filter[bogus]": "1"},
            json={} if method in ("POST", "PUT", "PATCH") else None,
            headers=auth(account),
        )
        assert response.status_code == 400, (method, template, response.text)
        [error] = response.json()["errors"]
        assert error["source"] == {"parameter": "filter[bogus]"}, (method, template)
        assert error["code"] == "190005"
        documented = openapi["paths"][template][method.lower()]["responses"]
        assert "400" in documented, (method, template)


async def test_a_parameter_given_twice_is_400(api: httpx.AsyncClient, account: NewAccount) -> None:
    response = await api.get(
        "/v2/recordings?filter[from]=%2B1555&filter[from]=%2B1666", headers=auth(account)
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["source"] == {"parameter": "filter[from]"} and error["code"] == "10015"


def parameters_of(operation: dict[str, Any], components: dict[str, Any]) -> set[str]:
    """deepObject names (`filter[start_time][gte]`) of a spec operation's query parameters."""
    names: set[str] = set()

    def walk(prefix: str, schema: dict[str, Any]) -> None:
        if "properties" not in schema:
            names.add(prefix)
            return
        for name, sub in schema["properties"].items():
            walk(f"{prefix}[{name}]", sub)

    for parameter in operation.get("parameters", []):
        if "$ref" in parameter:
            parameter = components["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["in"] == "query":
            walk(parameter["name"], parameter["schema"])
    return names


async def test_openapi_lists_every_parameter_of_the_spec(api: httpx.AsyncClient) -> None:
    ours = (await api.get("/v2/openapi.json")).json()
    telnyx = spec()

    def our_names(path: str) -> set[str]:
        return {p["name"] for p in ours["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    for path in ("/recordings", "/webhook_deliveries"):
        wanted = parameters_of(telnyx["paths"][path]["get"], telnyx["components"])
        assert our_names(f"/v2{path}") == wanted, path
    # applications: the spec's operation merges filters of call events; ours are the ones that
    # apply to applications (docs/api.md), plus sort and page[number]/page[size]
    assert our_names("/v2/call_control_applications") == {
        "page[number]",
        "page[size]",
        "sort",
        "filter[application_name][contains]",
        "filter[outbound.outbound_voice_profile_id]",
    }
