"""The console's API keys page (issue 21, item 6) and sign-in throttling, over HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.console.throttle import LoginThrottle
from callvault.runtime import Runtime

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_KEY = re.compile(r'<code id="new-api-key">([^<]+)</code>')
SIGNING_KEY = "/v2/webhook_signing_key"


async def client_for(runtime: Runtime, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A fresh app (its own login throttle), reached from `address`."""
    transport = httpx.ASGITransport(app=create_app(runtime), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://callvault.test")


@pytest.fixture
async def console(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(runtime) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    page = await client.get("/console/login")
    token = CSRF.search(page.text)
    assert token is not None
    return await client.post("/console/login", data={"api_key": api_key, "csrf_token": token[1]})


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    token = CSRF.search(page.text)
    assert token is not None
    return token[1]


async def test_a_key_made_in_the_console_is_shown_once_works_and_is_revoked(
    console: httpx.AsyncClient, runtime: Runtime, account: NewAccount, other_account: NewAccount
) -> None:
    assert (await sign_in(console, account.api_key)).status_code == 303
    csrf = await csrf_of(console, "/console/api-keys")
    refused = await console.post("/console/api-keys", data={"name": "no csrf"})
    assert refused.status_code == 403
    made = await console.post("/console/api-keys", data={"name": "billing", "csrf_token": csrf})
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    found = NEW_KEY.search(made.text)
    assert found is not None
    key = found[1]
    # shown this once: the list shows names and ids, never a key
    listing = await console.get("/console/api-keys")
    assert "billing" in listing.text and key not in listing.text
    assert account.api_key not in listing.text
    key_ids = re.findall(r'action="/console/api-keys/([^/"]+)/revoke"', listing.text)
    assert len(key_ids) == 2
    assert (
        await console.get(SIGNING_KEY, headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200

    too_long = await console.post("/console/api-keys", data={"name": "x" * 201, "csrf_token": csrf})
    assert too_long.status_code == 422 and "at most 200" in too_long.text

    made_id = re.search(r'<code id="new-api-key-id">([^<]+)</code>', made.text)
    assert made_id is not None and made_id[1] in key_ids
    new_id = made_id[1]
    no_csrf = await console.post(f"/console/api-keys/{new_id}/revoke")
    assert no_csrf.status_code == 403
    revoked = await console.post(f"/console/api-keys/{new_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/console/api-keys?flash=api-key-revoked"
    assert (
        await console.get(SIGNING_KEY, headers={"Authorization": f"Bearer {key}"})
    ).status_code == 401
    # another account's key, or one already gone: not found
    assert (
        await console.post(f"/console/api-keys/{new_id}/revoke", data={"csrf_token": csrf})
    ).status_code == 404
    async with await client_for(runtime) as other:
        assert (await sign_in(other, other_account.api_key)).status_code == 303
        other_page = await other.get("/console/api-keys")
        [other_id] = re.findall(r'action="/console/api-keys/([^/"]+)/revoke"', other_page.text)
    stolen = await console.post(f"/console/api-keys/{other_id}/revoke", data={"csrf_token": csrf})
    assert stolen.status_code == 404

    # revoking the key of this very session ends it
    [own_id] = [key_id for key_id in key_ids if key_id != new_id]
    own = await console.post(f"/console/api-keys/{own_id}/revoke", data={"csrf_token": csrf})
    assert own.status_code == 303 and own.headers["location"] == "/console/login"
    after = await console.get("/console/api-keys")
    assert after.status_code == 303 and after.headers["location"] == "/console/login"


async def test_sign_in_is_throttled_per_source_address(
    runtime: Runtime, account: NewAccount
) -> None:
    async with await client_for(runtime, "203.0.113.7") as attacker:
        for _ in range(10):
            assert (await sign_in(attacker, "KEYwrong")).status_code == 401
        throttled = await sign_in(attacker, account.api_key)  # even the right key, for now
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 300
        assert "Too many" in throttled.text
    async with await client_for(runtime, "203.0.113.8") as neighbour:
        assert (await sign_in(neighbour, account.api_key)).status_code == 303


def test_the_throttle_forgets_failures_past_its_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_secs=60, max_addresses=2, clock=lambda: now[0])
    for second in range(3):
        now[0] = float(second)
        throttle.failed("a")
    assert throttle.retry_after("a") == 58  # when the first failure leaves the window
    now[0] = 30.5
    assert throttle.retry_after("a") == 30
    now[0] = 60.0
    assert throttle.retry_after("a") is None  # the first failure left the window
    # bounded: the oldest address is dropped first
    throttle.failed("b")
    throttle.failed("c")
    assert len(throttle._failures) <= 2
