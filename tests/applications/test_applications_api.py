"""/v2/call_control_applications end to end through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.applications import repository
from callvault.runtime import Runtime
from tests.applications.helpers import create_application
from tests.conftest import auth

BASE = "/v2/call_control_applications"


def only_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


async def count_rows(runtime: Runtime, account: NewAccount) -> int:
    async with runtime.sessions() as session:
        return await repository.count(session, account.account_id)


async def test_create_answers_the_telnyx_shape_with_defaults(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    response = await api.post(
        BASE,
        json={"application_name": "call-router", "webhook_event_url": "https://example.com/hook"},
        headers=auth(account),
    )
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["record_type"] == "call_control_application"
    assert len(data["id"]) == 19 and data["id"].isdigit()
    assert data["application_name"] == "call-router"
    assert data["webhook_event_url"] == "https://example.com/hook"
    assert data["webhook_event_failover_url"] == ""  # the spec's default
    assert data["webhook_api_version"] == "1"
    assert data["webhook_timeout_secs"] is None
    assert data["active"] is True
    # the rest of the spec's object, with the spec's defaults
    assert data["anchorsite_override"] == "Latency"
    assert data["dtmf_type"] == "RFC 2833"
    assert data["first_command_timeout_secs"] == 30
    assert data["inbound"]["sip_subdomain_receive_settings"] == "from_anyone"
    assert data["outbound"] == {"channel_limit": None, "outbound_voice_profile_id": None}
    assert data["tags"] == []
    assert data["created_at"].endswith("Z") and data["created_at"] == data["updated_at"]


async def test_crud_round_trip(api: httpx.AsyncClient, account: NewAccount) -> None:
    created = await create_application(
        api,
        account,
        webhook_event_failover_url="https://failover.example.com/",
        webhook_api_version="2",
        webhook_timeout_secs=25,
        active=False,
    )
    url = f"{BASE}/{created['id']}"

    fetched = (await api.get(url, headers=auth(account))).json()["data"]
    assert fetched == created

    response = await api.patch(
        url,
        json={"application_name": "renamed", "webhook_event_failover_url": None},
        headers=auth(account),
    )
    assert response.status_code == 200
    patched = response.json()["data"]
    assert patched["application_name"] == "renamed"
    assert patched["webhook_event_failover_url"] is None
    # untouched fields stay
    assert patched["webhook_api_version"] == "2"
    assert patched["webhook_timeout_secs"] == 25
    assert patched["active"] is False
    assert patched["updated_at"] >= created["updated_at"]
    assert (await api.get(url, headers=auth(account))).json()["data"] == patched

    response = await api.delete(url, headers=auth(account))
    assert response.status_code == 200
    assert response.json()["data"]["id"] == created["id"]
    assert response.json()["data"]["application_name"] == "renamed"

    response = await api.get(url, headers=auth(account))
    assert response.status_code == 404
    assert only_error(response)["code"] == "10005"
    assert (await api.delete(url, headers=auth(account))).status_code == 404


async def test_every_spec_field_is_stored_as_written_and_unknown_ones_ignored(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    created = await create_application(
        api,
        account,
        anchorsite_override="Amsterdam, Netherlands",
        dtmf_type="Inband",
        inbound={"channel_limit": 10, "sip_subdomain": "example"},
        outbound={"outbound_voice_profile_id": "1293384261075731499"},
        first_command_timeout=True,
        first_command_timeout_secs=10,
        call_cost_in_webhooks=True,
        redact_dtmf_debug_logging=True,
        tags=["a", "b"],
        something_new={"nested": [1, 2]},
    )
    assert created["anchorsite_override"] == "Amsterdam, Netherlands"
    assert created["dtmf_type"] == "Inband"
    assert created["inbound"] == {
        "channel_limit": 10,
        "shaken_stir_enabled": False,
        "sip_subdomain": "example",
        "sip_subdomain_receive_settings": "from_anyone",
    }
    assert created["outbound"] == {
        "channel_limit": None,
        "outbound_voice_profile_id": "1293384261075731499",
    }
    assert created["first_command_timeout"] is True
    assert created["first_command_timeout_secs"] == 10
    assert created["call_cost_in_webhooks"] is True
    assert created["redact_dtmf_debug_logging"] is True
    assert created["tags"] == ["a", "b"]
    assert "something_new" not in created
    response = await api.patch(
        f"{BASE}/{created['id']}",
        json={"dtmf_type": "SIP INFO", "inbound": {"shaken_stir_enabled": True}},
        headers=auth(account),
    )
    assert response.status_code == 200
    patched = response.json()["data"]
    assert patched["dtmf_type"] == "SIP INFO"
    # a partial PATCH keeps the rest, inside inbound too
    assert patched["inbound"] == {**created["inbound"], "shaken_stir_enabled": True}
    unchanged = {"dtmf_type", "inbound", "updated_at"}
    assert {k: v for k, v in patched.items() if k not in unchanged} == {
        k: v for k, v in created.items() if k not in unchanged
    }
    fetched = (await api.get(f"{BASE}/{created['id']}", headers=auth(account))).json()["data"]
    assert fetched == patched


async def test_failover_url_is_answered_as_written_and_api_version_may_be_a_number(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    created = await create_application(
        api, account, webhook_event_failover_url="", webhook_api_version=2
    )
    assert created["webhook_event_failover_url"] == ""
    assert created["webhook_api_version"] == "2"
    nulled = await create_application(api, account, webhook_event_failover_url=None)
    assert nulled["webhook_event_failover_url"] is None


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"webhook_event_url": "https://example.com"}, "/application_name"),
        ({"application_name": "x"}, "/webhook_event_url"),
        ({"application_name": "", "webhook_event_url": "https://example.com"}, "/application_name"),
        ({"application_name": 5, "webhook_event_url": "https://example.com"}, "/application_name"),
        ({"application_name": "x", "webhook_event_url": "example.com"}, "/webhook_event_url"),
        ({"application_name": "x", "webhook_event_url": "ftp://example.com"}, "/webhook_event_url"),
        (
            {"application_name": "x", "webhook_event_url": "https://u:p@example.com"},
            "/webhook_event_url",
        ),
        (
            {"application_name": "x", "webhook_event_url": "https://" + "a" * 2048 + ".com"},
            "/webhook_event_url",
        ),
        (
            {
                "application_name": "x",
                "webhook_event_url": "https://example.com",
                "webhook_event_failover_url": "not a url",
            },
            "/webhook_event_failover_url",
        ),
        (
            {
                "application_name": "x",
                "webhook_event_url": "https://example.com",
                "webhook_api_version": "3",
            },
            "/webhook_api_version",
        ),
        (
            {
                "application_name": "x",
                "webhook_event_url": "https://example.com",
                "webhook_timeout_secs": 31,
            },
            "/webhook_timeout_secs",
        ),
        (
            {
                "application_name": "x",
                "webhook_event_url": "https://example.com",
                "webhook_timeout_secs": -1,
            },
            "/webhook_timeout_secs",
        ),
        (
            {
                "application_name": "x",
                "webhook_event_url": "https://example.com",
                "webhook_timeout_secs": "5",
            },
            "/webhook_timeout_secs",
        ),
        (
            {"application_name": "x", "webhook_event_url": "https://example.com", "active": "no"},
            "/active",
        ),
    ],
)
async def test_create_refuses_bad_input_and_stores_nothing(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    body: dict[str, Any],
    pointer: str,
) -> None:
    response = await api.post(BASE, json=body, headers=auth(account))
    assert response.status_code == 422, response.text
    error = only_error(response)
    assert error["code"] == "10015"
    assert error["source"]["pointer"] == pointer
    assert await count_rows(runtime, account) == 0


async def test_broken_json_is_400_and_a_non_object_is_422(
    api: httpx.AsyncClient, account: NewAccount, runtime: Runtime
) -> None:
    headers = {**auth(account), "Content-Type": "application/json"}
    response = await api.post(BASE, content=b'{"application_name": "x",', headers=headers)
    assert response.status_code == 400
    assert only_error(response)["code"] == "10015"
    response = await api.post(BASE, content=b"[1, 2]", headers=headers)
    assert response.status_code == 422
    assert await count_rows(runtime, account) == 0


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"application_name": None}, "/application_name"),
        ({"webhook_event_url": None}, "/webhook_event_url"),
        ({"webhook_api_version": None}, "/webhook_api_version"),
        ({"active": None}, "/active"),
        ({"webhook_event_url": "mailto:x@example.com"}, "/webhook_event_url"),
        ({"webhook_timeout_secs": 99}, "/webhook_timeout_secs"),
    ],
)
async def test_patch_refuses_bad_input_and_changes_nothing(
    api: httpx.AsyncClient, account: NewAccount, body: dict[str, Any], pointer: str
) -> None:
    created = await create_application(api, account)
    url = f"{BASE}/{created['id']}"
    response = await api.patch(url, json=body, headers=auth(account))
    assert response.status_code == 422, response.text
    assert only_error(response)["source"]["pointer"] == pointer
    assert (await api.get(url, headers=auth(account))).json()["data"] == created


async def test_patch_clears_nullable_fields(api: httpx.AsyncClient, account: NewAccount) -> None:
    created = await create_application(
        api, account, webhook_timeout_secs=10, webhook_event_failover_url="https://f.example.com"
    )
    response = await api.patch(
        f"{BASE}/{created['id']}",
        json={"webhook_timeout_secs": None, "webhook_event_failover_url": ""},
        headers=auth(account),
    )
    data = response.json()["data"]
    assert data["webhook_timeout_secs"] is None
    assert data["webhook_event_failover_url"] == ""  # as written


async def test_list_pages_newest_first(api: httpx.AsyncClient, account: NewAccount) -> None:
    created = [
        (await create_application(api, account, application_name=f"app-{n}"))["id"]
        for n in range(5)
    ]
    seen: list[str] = []
    for number in (1, 2, 3):
        response = await api.get(
            BASE, params={"page[number]": number, "page[size]": 2}, headers=auth(account)
        )
        assert response.status_code == 200
        body = response.json()
        assert body["meta"] == {
            "page_number": number,
            "page_size": 2,
            "total_pages": 3,
            "total_results": 5,
        }
        seen += [item["id"] for item in body["data"]]
    assert seen == list(reversed(created))

    body = (await api.get(BASE, headers=auth(account))).json()
    assert body["meta"]["page_size"] == 20 and body["meta"]["page_number"] == 1
    assert len(body["data"]) == 5

    body = (await api.get(BASE, params={"sort": "connection_name"}, headers=auth(account))).json()
    assert [item["application_name"] for item in body["data"]] == [f"app-{n}" for n in range(5)]

    body = (
        await api.get(
            BASE, params={"filter[application_name][contains]": "P-3"}, headers=auth(account)
        )
    ).json()
    assert [item["id"] for item in body["data"]] == [created[3]]

    body = (await api.get(BASE, params={"page[number]": 9}, headers=auth(account))).json()
    assert body["data"] == [] and body["meta"]["total_results"] == 5


async def test_an_empty_list_has_no_pages(api: httpx.AsyncClient, account: NewAccount) -> None:
    body = (await api.get(BASE, headers=auth(account))).json()
    assert body == {
        "data": [],
        "meta": {"page_number": 1, "page_size": 20, "total_pages": 0, "total_results": 0},
    }


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"page[size]": 0}, "page[size]"),
        ({"page[size]": 251}, "page[size]"),
        ({"page[size]": "ten"}, "page[size]"),
        ({"page[number]": 0}, "page[number]"),
        ({"sort": "id"}, "sort"),
    ],
)
async def test_list_refuses_bad_paging(
    api: httpx.AsyncClient, account: NewAccount, params: dict[str, Any], parameter: str
) -> None:
    response = await api.get(BASE, params=params, headers=auth(account))
    assert response.status_code == 422
    assert only_error(response)["source"]["parameter"] == parameter


async def test_page_size_250_is_allowed(api: httpx.AsyncClient, account: NewAccount) -> None:
    response = await api.get(BASE, params={"page[size]": 250}, headers=auth(account))
    assert response.status_code == 200
    assert response.json()["meta"]["page_size"] == 250


async def test_one_account_never_sees_or_changes_anothers_applications(
    api: httpx.AsyncClient, account: NewAccount, other_account: NewAccount
) -> None:
    created = await create_application(api, account)
    url = f"{BASE}/{created['id']}"
    intruder = auth(other_account)
    for response in (
        await api.get(url, headers=intruder),
        await api.patch(url, json={"application_name": "mine"}, headers=intruder),
        await api.delete(url, headers=intruder),
    ):
        assert response.status_code == 404
        assert only_error(response)["code"] == "10005"
    listed = (await api.get(BASE, headers=intruder)).json()
    assert listed["data"] == [] and listed["meta"]["total_results"] == 0
    assert (await api.get(url, headers=auth(account))).json()["data"] == created


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/1684641123236054244"),
        ("PATCH", f"{BASE}/1684641123236054244"),
        ("DELETE", f"{BASE}/1684641123236054244"),
    ],
)
async def test_every_operation_needs_a_valid_api_key(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer KEYnot-a-real-key"}):
        response = await api.request(method, path, json={}, headers=headers)
        assert response.status_code == 401
        assert only_error(response)["code"] == "10009"


# ---- outbound address policy: the suite allows private networks; these tests do not


@pytest.fixture
async def strict_api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API of a deployment that refuses private networks, on the same database."""
    strict = dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, allow_private_networks=False)
    )
    transport = httpx.ASGITransport(app=create_app(strict), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        yield client


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("webhook_event_url", "http://127.0.0.1:8080/hook"),
        ("webhook_event_url", "http://localhost/hook"),
        ("webhook_event_url", "https://10.1.2.3/hook"),
        ("webhook_event_url", "http://169.254.169.254/latest/meta-data"),
        ("webhook_event_url", "http://[::1]/hook"),
        ("webhook_event_failover_url", "http://192.168.0.10/hook"),
    ],
)
async def test_private_webhook_urls_are_refused_unless_allowed(
    strict_api: httpx.AsyncClient,
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    field: str,
    url: str,
) -> None:
    body = {"application_name": "x", "webhook_event_url": "https://8.8.8.8/hook", field: url}
    response = await strict_api.post(BASE, json=body, headers=auth(account))
    assert response.status_code == 422, response.text
    assert only_error(response)["source"]["pointer"] == f"/{field}"
    # the refusal points at the fix: a policy of this server, and the setting that changes it
    assert "this server's policy" in only_error(response)["detail"]
    assert "CALLVAULT_ALLOW_PRIVATE_NETWORKS" in only_error(response)["detail"]
    assert await count_rows(runtime, account) == 0
    # the same URL is fine where the operator allows private networks
    assert (await api.post(BASE, json=body, headers=auth(account))).status_code == 201


async def test_patch_checks_the_address_policy_too(
    strict_api: httpx.AsyncClient, account: NewAccount
) -> None:
    created = await create_application(strict_api, account, webhook_event_url="http://8.8.8.8/")
    response = await strict_api.patch(
        f"{BASE}/{created['id']}",
        json={"webhook_event_url": "http://127.0.0.1/"},
        headers=auth(account),
    )
    assert response.status_code == 422
    assert only_error(response)["source"]["pointer"] == "/webhook_event_url"
    # a public address and a name that does not resolve (yet) are accepted
    for url in ("https://8.8.4.4/hook", "https://hooks.callvault-test.invalid/hook"):
        response = await strict_api.patch(
            f"{BASE}/{created['id']}", json={"webhook_event_url": url}, headers=auth(account)
        )
        assert response.status_code == 200, response.text


async def test_an_unsupported_method_names_the_supported_ones(api: httpx.AsyncClient) -> None:
    response = await api.request("OPTIONS", f"{BASE}/1684641123236054244")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    response = await api.put(BASE, json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"


async def test_a_page_far_past_the_end_is_empty(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    await create_application(api, account)
    response = await api.get(
        BASE, params={"page[number]": 5911756077199758336, "page[size]": 250}, headers=auth(account)
    )
    assert response.status_code == 200
    assert response.json()["data"] == [] and response.json()["meta"]["total_results"] == 1


async def test_a_whole_float_timeout_is_an_integer(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    created = await create_application(api, account, webhook_timeout_secs=19.0)
    assert created["webhook_timeout_secs"] == 19
    body = {
        "application_name": "x",
        "webhook_event_url": "https://e.com",
        "webhook_timeout_secs": 1.5,
    }
    response = await api.post(BASE, json=body, headers=auth(account))
    assert response.status_code == 422
