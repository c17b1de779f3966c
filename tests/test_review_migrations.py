"""Migrations 0007_review and 0008_review on data written before them, on SQLite and
PostgreSQL: an account's existing API key keeps working (and its open console sessions with
it), delivery records lose their stored signatures and the receivers' cookies, no row of any
table that points at `accounts` is lost when SQLite rebuilds it, and down and up again keeps
the key."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from callvault.accounts import keys
from callvault.accounts.service import authenticate
from callvault.config import sqlalchemy_url
from callvault.console import repository as console_rows
from callvault.db import alembic_config, make_engine, make_sessionmaker
from tests.conftest import POSTGRES_ADMIN_DSN

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"callvault_migrations_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(url: str, *statements: tuple[str, dict[str, object]]) -> None:
    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.begin() as connection:
        for sql, values in statements:
            await connection.execute(sa.text(sql), values)
    await engine.dispose()


async def _rows(url: str, sql: str) -> list[sa.Row[tuple[object, ...]]]:
    engine = create_async_engine(sqlalchemy_url(url))
    async with engine.connect() as connection:
        rows = list((await connection.execute(sa.text(sql))).all())
    await engine.dispose()
    return rows


async def test_old_rows_survive_and_lose_their_secrets(empty_database: str) -> None:
    url = empty_database
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0006")
    api_key = keys.new_api_key()
    session_token_hash = "t" * 64
    signed = [["Content-Type", "application/json"], ["telnyx-signature-ed25519", "c2lnbmF0dXJl"]]
    answered = [["Set-Cookie", "sid=receiver-secret"], ["X-Kept", "yes"]]
    await _execute(
        url,
        (
            "INSERT INTO accounts (id, name, api_key_hash, webhook_public_key, "
            "webhook_private_key_sealed, created_at) VALUES ('a1', 'old', :hash, 'p', 's', :now)",
            {"hash": keys.hash_api_key(api_key), "now": NOW},
        ),
        (
            "INSERT INTO applications (id, account_id, application_name, webhook_event_url, "
            "webhook_api_version, active, created_at, updated_at) "
            "VALUES ('app1', 'a1', 'kept', 'https://example.com/h', '2', true, :now, :now)",
            {"now": NOW},
        ),
        (
            "INSERT INTO console_sessions (token_hash, account_id, created_at, expires_at) "
            "VALUES (:token, 'a1', :now, :later)",
            {
                "token": session_token_hash,
                "now": NOW,
                "later": datetime.now(UTC) + timedelta(hours=1),
            },
        ),
        (
            "INSERT INTO webhook_events (id, account_id, application_id, event_type, api_version,"
            " payload, occurred_at, status, attempts, created_at) VALUES ('e1', 'a1', 'app1', "
            "'call.recording.saved', '2', '{}', :now, 'delivered', 1, :now)",
            {"now": NOW},
        ),
        (
            "INSERT INTO webhook_attempts (event_id, attempt, url, status_code, created_at, "
            "request_headers, response_headers) VALUES ('e1', 1, 'https://example.com/h', 200, "
            ":now, :request, :response)",
            {"now": NOW, "request": _json(signed), "response": _json(answered)},
        ),
    )

    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            account = await authenticate(session, api_key)
            assert account is not None and account.id == "a1"
            # the session open before the migration is tied to the migrated key and lives on
            found = await console_rows.account_of_session(session, session_token_hash, NOW)
            assert found is not None and found[0].id == "a1"
    finally:
        await engine.dispose()
    [(name,)] = await _rows(url, "SELECT name FROM api_keys WHERE account_id = 'a1'")
    assert name == "default"
    # expand, then contract: the previous release's column is still there, with the key
    assert await _rows(url, "SELECT api_key_hash FROM accounts") == [(keys.hash_api_key(api_key),)]
    assert await _rows(url, "SELECT id FROM applications WHERE account_id = 'a1'") == [("app1",)]
    [(request_headers, response_headers)] = await _rows(
        url, "SELECT request_headers, response_headers FROM webhook_attempts"
    )
    assert _pairs(request_headers) == [
        ["Content-Type", "application/json"],
        ["telnyx-signature-ed25519", "[redacted]"],
    ]
    assert _pairs(response_headers) == [["X-Kept", "yes"]]
    if url.startswith("sqlite"):
        assert await _rows(url, "PRAGMA foreign_key_check") == []

    # down again: each account gets its (oldest) key back; and up once more
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0006")
    assert await _rows(url, "SELECT api_key_hash FROM accounts") == [(keys.hash_api_key(api_key),)]
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            assert await authenticate(session, api_key) is not None
    finally:
        await engine.dispose()


def _json(value: object) -> str:
    return json.dumps(value)


def _pairs(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value
