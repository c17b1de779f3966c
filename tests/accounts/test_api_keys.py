"""API keys (issue 21, item 6): several per account, `callvault accounts api-keys
create|list|revoke`, and a revoked key refused at once by a server that had it cached, along
with the console sessions signed in with it. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from callvault.accounts.cache import USE_MARK_SECS, AccountCache
from callvault.accounts.models import ApiKey
from callvault.accounts.service import NewAccount
from callvault.cli import app as cli_app
from callvault.config import Settings
from callvault.console.sessions import COOKIE_NAME
from callvault.runtime import Runtime
from tests.conftest import LiveServer

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SIGNING_KEY = "/v2/webhook_signing_key"


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "CALLVAULT_DATA_DIR": str(settings.data_dir),
        "CALLVAULT_DATABASE_URL": settings.database_url,
        "CALLVAULT_ENCRYPTION_KEYS": ",".join(settings.encryption_keys_b64),
        "CALLVAULT_INGEST_TOKEN": settings.ingest_token,
    }


async def cli(settings: Settings, *args: str) -> tuple[int, str]:
    """`callvault ARGS` in a thread (each command runs its own event loop)."""

    def run() -> tuple[int, str]:
        result = CliRunner().invoke(cli_app, list(args), env=cli_env(settings))
        return result.exit_code, result.stdout

    return await asyncio.to_thread(run)


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    """Another process's view: its own runtime and key cache, fed by the same database."""
    live = LiveServer(settings, run_worker=False).start()
    yield live
    live.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def session_cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={token}"}


async def console_session(client: httpx.AsyncClient, api_key: str) -> str:
    page = await client.get("/console/login")
    token = CSRF.search(page.text)
    assert token is not None
    answer = await client.post("/console/login", data={"api_key": api_key, "csrf_token": token[1]})
    assert answer.status_code == 303, answer.text
    session = client.cookies[COOKIE_NAME]
    client.cookies.clear()
    return session


async def test_keys_are_created_listed_and_revoked_at_once_everywhere(
    settings: Settings, runtime: Runtime, account: NewAccount, server: LiveServer
) -> None:
    code, out = await cli(
        settings, "accounts", "api-keys", "create", account.account_id, "--name", "ci", "--json"
    )
    assert code == 0, out
    created: dict[str, Any] = json.loads(out)  # exactly one JSON object
    assert set(created) == {"id", "api_key", "name"} and created["name"] == "ci"
    new_key = created["api_key"]

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        # both keys work, and the server caches both
        for key in (account.api_key, new_key):
            answer = await client.get(SIGNING_KEY, headers=bearer(key))
            assert answer.status_code == 200, answer.text
        session = await console_session(client, new_key)
        assert (await client.get("/console", headers=session_cookie(session))).status_code == 200

        code, out = await cli(
            settings, "accounts", "api-keys", "list", account.account_id, "--json"
        )
        assert code == 0, out
        listed = json.loads(out)
        assert listed["account_id"] == account.account_id
        by_name = {item["name"]: item for item in listed["api_keys"]}
        assert set(by_name) == {"default", "ci"}
        assert by_name["ci"]["id"] == created["id"]
        assert by_name["ci"]["created_at"] and by_name["ci"]["last_used_at"]
        assert all(
            set(item) == {"id", "name", "created_at", "last_used_at"} for item in by_name.values()
        )
        assert new_key not in out

        code, out = await cli(settings, "accounts", "api-keys", "revoke", created["id"])
        assert code == 0, out
        # the very next request: refused, though the server had the key cached
        refused = await client.get(SIGNING_KEY, headers=bearer(new_key))
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["code"]
        assert (await client.get(SIGNING_KEY, headers=bearer(account.api_key))).status_code == 200
        # and the console session signed in with it is over
        ended = await client.get("/console", headers=session_cookie(session))
        assert ended.status_code == 303 and ended.headers["location"] == "/console/login"

    # the in-process app had it cached too
    assert (await _in_process_get(runtime, new_key)).status_code == 401

    code, _ = await cli(settings, "accounts", "api-keys", "revoke", created["id"])
    assert code == 1  # no such key (any more)
    code, _ = await cli(settings, "accounts", "api-keys", "list", "no-such-account")
    assert code == 1


async def _in_process_get(runtime: Runtime, key: str) -> httpx.Response:
    from callvault.app import create_app

    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        return await client.get(SIGNING_KEY, headers=bearer(key))


async def test_create_without_a_name_and_refusals(settings: Settings, account: NewAccount) -> None:
    code, out = await cli(settings, "accounts", "api-keys", "create", account.account_id)
    assert code == 0 and "api_key" in out and "shown only now" in out
    code, _ = await cli(settings, "accounts", "api-keys", "create", "no-such-account", "--json")
    assert code == 1
    code, _ = await cli(
        settings, "accounts", "api-keys", "create", account.account_id, "--name", "x" * 201
    )
    assert code == 2


async def test_last_use_is_written_once_a_minute_at_most(
    runtime: Runtime, account: NewAccount, api: httpx.AsyncClient
) -> None:
    for _ in range(3):
        assert (await api.get(SIGNING_KEY, headers=bearer(account.api_key))).status_code == 200
    async with runtime.sessions() as session:
        [first] = (
            await session.scalars(
                select(ApiKey.last_used_at).where(ApiKey.account_id == account.account_id)
            )
        ).all()
    assert first is not None
    # within the minute: not written again (the clock's side: the unit test below)
    assert (await api.get(SIGNING_KEY, headers=bearer(account.api_key))).status_code == 200
    async with runtime.sessions() as session:
        [again] = (
            await session.scalars(
                select(ApiKey.last_used_at).where(ApiKey.account_id == account.account_id)
            )
        ).all()
    assert again == first


def test_the_use_mark_is_due_once_a_minute_per_key() -> None:
    now = [1000.0]
    cache = AccountCache(clock=lambda: now[0])
    assert cache.use_mark_due("k1") and cache.use_mark_due("k2")
    assert not cache.use_mark_due("k1")
    now[0] += USE_MARK_SECS - 1
    assert not cache.use_mark_due("k1")
    now[0] += 1
    assert cache.use_mark_due("k1")
