"""Every /v2 resource belongs to one account: another account's ids answer 404, exactly like
ids that do not exist, for every method, and change nothing.

The test walks the app's routes. A route with a path parameter needs an entry in OWNED (how to
create the resource for account A); a route without one needs an entry in COLLECTIONS (how to
check that B sees or touches nothing of A's). A route in neither fails the test, so a new
endpoint cannot ship without its tenancy check.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.applications.ids import new_application_id
from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.storage.local import LocalStore
from callvault.webhooks.models import EventStatus, WebhookEvent
from tests.conftest import auth
from tests.credentials.samples import body as credentials_body
from tests.encryption.keys import register_key, rsa_private
from tests.security.flows import create_application, ingest, is_telnyx_error
from tests.servers import ServiceAccount


@dataclass
class World:
    api: httpx.AsyncClient
    runtime: Runtime
    a: NewAccount
    b: NewAccount
    service_account: ServiceAccount


@dataclass
class Owned:
    """A resource of account A: its path parameters, ids of the same shape that do not exist,
    and A's view of it (compared before and after B's request)."""

    params: dict[str, str]
    missing: dict[str, str]
    state: Callable[[], Awaitable[Any]]


async def as_a(world: World, path: str, drop: tuple[str, ...] = ()) -> Any:
    response = await world.api.get(path, headers=auth(world.a))
    body = response.json() if response.content else None
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body["data"] = {k: v for k, v in body["data"].items() if k not in drop}
    return response.status_code, body


async def application(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    return Owned(
        {"id": app_id},
        {"id": new_application_id()},
        lambda: as_a(world, f"/v2/call_control_applications/{app_id}"),
    )


async def application_without_storage(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    return Owned(
        {"connection_id": app_id},
        {"connection_id": new_application_id()},
        lambda: as_a(world, f"/v2/custom_storage_credentials/{app_id}"),
    )


async def application_with_storage(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    response = await world.api.post(
        f"/v2/custom_storage_credentials/{app_id}",
        json=credentials_body("s3", world.service_account),
        headers=auth(world.a),
    )
    assert response.status_code == 200, response.text
    return Owned(
        {"connection_id": app_id},
        {"connection_id": new_application_id()},
        lambda: as_a(world, f"/v2/custom_storage_credentials/{app_id}"),
    )


async def recording(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    recording_id = await ingest(world.api, world.runtime, app_id)
    return Owned(
        {"recording_id": recording_id},
        {"recording_id": str(uuid.uuid4())},
        # download links are signed afresh on every read
        lambda: as_a(world, f"/v2/recordings/{recording_id}", drop=("download_urls",)),
    )


async def recording_file(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    recording_id = await ingest(world.api, world.runtime, app_id)
    async with world.runtime.sessions() as session:
        row = await session.get(Recording, recording_id)
    assert row is not None and row.default_store_key
    store = world.runtime.default_store
    assert isinstance(store, LocalStore)
    path = store.path_for(row.default_store_key)

    async def state() -> Any:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None

    key = row.default_store_key
    return Owned({"key": key}, {"key": key.replace(recording_id[:8], "00000000")}, state)


async def failed_webhook_event(world: World) -> Owned:
    app_id = await create_application(world.api, world.a)
    event_id = str(uuid.uuid4())
    async with transaction(world.runtime.sessions) as session:
        session.add(
            WebhookEvent(
                id=event_id,
                account_id=world.a.account_id,
                application_id=app_id,
                event_type="call.recording.saved",
                api_version="2",
                payload={"recording_id": "r"},
                status=EventStatus.FAILED,
                attempts=3,
                next_attempt_at=None,
            )
        )

    async def state() -> Any:
        async with world.runtime.sessions() as session:
            event = await session.get(WebhookEvent, event_id, populate_existing=True)
        assert event is not None
        return event.status, event.attempts, event.next_attempt_at, event.lease_owner

    return Owned({"event_id": event_id}, {"event_id": str(uuid.uuid4())}, state)


async def encryption_key(world: World) -> Owned:
    key_id = (await register_key(world.api, world.a.api_key, rsa_private()))["id"]
    return Owned(
        {"id": key_id},
        {"id": str(uuid.uuid4())},
        lambda: as_a(world, f"/v2/recording_encryption_keys/{key_id}"),
    )


async def webhook_delivery(world: World) -> Owned:
    event = await failed_webhook_event(world)
    event_id = event.params["event_id"]
    return Owned(
        {"id": event_id},
        {"id": str(uuid.uuid4())},
        lambda: as_a(world, f"/v2/webhook_deliveries/{event_id}"),
    )


@dataclass
class Case:
    make: Callable[[World], Awaitable[Owned]]
    # B's request body, when the route takes one (a valid one: the ids must be what stops it)
    body: Callable[[World], Any] | None = None
    # signed links carry their own authorization: without A's signature they answer 403
    statuses: set[int] = field(default_factory=lambda: {404})


def s3_body(world: World) -> Any:
    return credentials_body("s3", world.service_account)


OWNED: dict[tuple[str, str], Case] = {
    ("GET", "/v2/call_control_applications/{id}"): Case(application),
    ("PATCH", "/v2/call_control_applications/{id}"): Case(
        application, body=lambda w: {"application_name": "taken over", "active": False}
    ),
    ("DELETE", "/v2/call_control_applications/{id}"): Case(application),
    # POST on A's connection without storage: B must not attach a bucket to A's recordings
    ("POST", "/v2/custom_storage_credentials/{connection_id}"): Case(
        application_without_storage, body=s3_body
    ),
    ("GET", "/v2/custom_storage_credentials/{connection_id}"): Case(application_with_storage),
    ("PUT", "/v2/custom_storage_credentials/{connection_id}"): Case(
        application_with_storage, body=s3_body
    ),
    ("DELETE", "/v2/custom_storage_credentials/{connection_id}"): Case(application_with_storage),
    ("POST", "/v2/custom_storage_credentials/{connection_id}/actions/validate"): Case(
        application_with_storage
    ),
    ("GET", "/v2/custom_storage_credentials/{connection_id}/aws_role_setup"): Case(
        application_without_storage
    ),
    ("POST", "/v2/webhook_deliveries/{event_id}/actions/retry"): Case(failed_webhook_event),
    ("GET", "/v2/webhook_deliveries/{id}"): Case(webhook_delivery),
    ("GET", "/v2/recordings/{recording_id}"): Case(recording),
    ("DELETE", "/v2/recordings/{recording_id}"): Case(recording),
    ("POST", "/v2/recordings/{recording_id}/actions/redeliver"): Case(recording),
    ("GET", "/v2/recording_encryption_keys/{id}"): Case(encryption_key),
    ("DELETE", "/v2/recording_encryption_keys/{id}"): Case(encryption_key),
    ("GET", "/v2/recording_files/{key}"): Case(recording_file, statuses={403}),
    ("HEAD", "/v2/recording_files/{key}"): Case(recording_file, statuses={403}),
}


async def list_applications(world: World) -> list[str]:
    app_id = await create_application(world.api, world.a)
    response = await world.api.get(
        "/v2/call_control_applications", params={"page[size]": 250}, headers=auth(world.b)
    )
    assert response.status_code == 200
    return [f"B sees A's application {app_id}"] * (
        app_id in {item["id"] for item in response.json()["data"]}
    )


async def create_application_as_b(world: World) -> list[str]:
    created = await create_application(world.api, world.b)
    response = await world.api.get(
        "/v2/call_control_applications", params={"page[size]": 250}, headers=auth(world.a)
    )
    return ["B's new application shows up for A"] * (
        created in {item["id"] for item in response.json()["data"]}
    )


async def list_recordings(world: World) -> list[str]:
    app_id = await create_application(world.api, world.a)
    recording_id = await ingest(world.api, world.runtime, app_id)
    problems = []
    for params in ({}, {"filter[connection_id]": app_id}):
        response = await world.api.get(
            "/v2/recordings", params={"page[size]": 250, **params}, headers=auth(world.b)
        )
        assert response.status_code == 200, response.text
        if recording_id in {item["id"] for item in response.json()["data"]}:
            problems.append(f"B lists A's recording with {params}")
        if response.json()["meta"]["total_results"] and params:
            problems.append("B's count of A's connection's recordings is not 0")
    return problems


async def delete_recordings_by_ids(world: World) -> list[str]:
    app_id = await create_application(world.api, world.a)
    recording_id = await ingest(world.api, world.runtime, app_id)
    before = await as_a(world, f"/v2/recordings/{recording_id}", drop=("download_urls",))
    response = await world.api.post(
        "/v2/recordings/actions/delete", json={"ids": [recording_id]}, headers=auth(world.b)
    )
    after = await as_a(world, f"/v2/recordings/{recording_id}", drop=("download_urls",))
    problems = [f"B's bulk delete answered {response.status_code}"] * (response.status_code >= 500)
    return problems + ["B's bulk delete changed A's recording"] * (before != after)


async def list_encryption_keys(world: World) -> list[str]:
    key_id = (await register_key(world.api, world.a.api_key, rsa_private()))["id"]
    response = await world.api.get(
        "/v2/recording_encryption_keys", params={"page[size]": 250}, headers=auth(world.b)
    )
    assert response.status_code == 200
    return [f"B sees A's encryption key {key_id}"] * (
        key_id in {item["id"] for item in response.json()["data"]}
    )


async def create_encryption_key_as_b(world: World) -> list[str]:
    key_id = (await register_key(world.api, world.b.api_key, rsa_private()))["id"]
    response = await world.api.get(
        "/v2/recording_encryption_keys", params={"page[size]": 250}, headers=auth(world.a)
    )
    return ["B's new encryption key shows up for A"] * (
        key_id in {item["id"] for item in response.json()["data"]}
    )


async def list_webhook_deliveries(world: World) -> list[str]:
    delivery = await webhook_delivery(world)
    event_id = delivery.params["id"]
    assert (await delivery.state())[0] == 200  # A sees it
    response = await world.api.get(
        "/v2/webhook_deliveries", params={"page[size]": 250}, headers=auth(world.b)
    )
    assert response.status_code == 200, response.text
    return ["B lists A's webhook delivery"] * (
        event_id in {item["id"] for item in response.json()["data"]}
    )


async def signing_key(world: World) -> list[str]:
    response = await world.api.get("/v2/webhook_signing_key", headers=auth(world.b))
    key = response.json()["data"]["public_key"]
    return [] if key == world.b.webhook_public_key else ["B is shown another account's key"]


COLLECTIONS: dict[tuple[str, str], Callable[[World], Awaitable[list[str]]]] = {
    ("GET", "/v2/call_control_applications"): list_applications,
    ("POST", "/v2/call_control_applications"): create_application_as_b,
    ("GET", "/v2/recordings"): list_recordings,
    ("POST", "/v2/recordings/actions/delete"): delete_recordings_by_ids,
    ("GET", "/v2/webhook_signing_key"): signing_key,
    ("GET", "/v2/recording_encryption_keys"): list_encryption_keys,
    ("POST", "/v2/recording_encryption_keys"): create_encryption_key_as_b,
    ("GET", "/v2/webhook_deliveries"): list_webhook_deliveries,
}


# /v2 routes that hold nothing of any account: the API docs page and its files
# (tests/console/test_api_docs.py)
NO_ACCOUNT_DATA = {"/v2/docs", "/v2/docs/static/{name}"}


def v2_routes(runtime: Runtime) -> list[tuple[str, str, list[str]]]:
    """(method, path template, path parameter names) of every /v2 route the app serves."""
    app = create_app(runtime)
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path_format
        if not isinstance(route, APIRoute) or not path or not path.startswith("/v2/"):
            continue
        if path in NO_ACCOUNT_DATA:
            continue
        names = [param.alias or param.name for param in context.dependant.path_params]
        for method in sorted(context.methods or ()):
            found.append((method, path, names))
    return found


def fill(path: str, params: dict[str, str]) -> str:
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_another_accounts_ids_answer_404_and_change_nothing(
    api, runtime, account, other_account, gcs_service_account
):
    world = World(api, runtime, account, other_account, gcs_service_account)
    routes = v2_routes(runtime)
    assert len(routes) >= 19  # the walk found the app's routes (not an empty list)
    problems: list[str] = []
    for method, path, names in routes:
        if not names:
            continue
        case = OWNED.get((method, path))
        if case is None:
            problems.append(f"new route without a tenancy test: {method} {path}")
            continue
        owned = await case.make(world)
        assert set(owned.params) == set(names), (method, path, names)
        before = await owned.state()
        kwargs: dict[str, Any] = {"headers": auth(world.b)}
        if case.body is not None:
            kwargs["json"] = case.body(world)
        response = await api.request(method, fill(path, owned.params), **kwargs)
        unknown = await api.request(method, fill(path, owned.missing), **kwargs)
        where = f"{method} {path} as another account"
        if method == "HEAD":
            if response.status_code not in case.statuses:
                problems.append(f"{where}: {response.status_code}")
        elif not any(is_telnyx_error(response, status) for status in case.statuses):
            problems.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif response.status_code == 404 and response.json()["errors"][0]["code"] != "10005":
            problems.append(f"{where}: 404 without code 10005: {response.text[:200]}")
        elif (response.status_code, response.content) != (unknown.status_code, unknown.content):
            # anything else would tell B that the id exists
            problems.append(
                f"{where}: answers differently from an unknown id "
                f"({response.status_code} {response.text[:120]} vs "
                f"{unknown.status_code} {unknown.text[:120]})"
            )
        if await owned.state() != before:
            problems.append(f"{where}: changed A's resource")
    assert problems == []


async def test_routes_without_ids_show_and_touch_nothing_of_another_account(
    api, runtime, account, other_account, gcs_service_account
):
    world = World(api, runtime, account, other_account, gcs_service_account)
    problems: list[str] = []
    for method, path, names in v2_routes(runtime):
        if names:
            continue
        check = COLLECTIONS.get((method, path))
        if check is None:
            problems.append(f"new route without a tenancy test: {method} {path}")
            continue
        problems += [f"{method} {path}: {problem}" for problem in await check(world)]
    assert problems == []
