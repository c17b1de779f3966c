"""`/health` is liveness only; `/ready` is 200 only when the database answers at head, the
default store's bucket exists and can be written, and the keys open the data (issue 26); a
failing check names itself."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import structlog
import structlog.testing

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.config import Settings
from callvault.db import migrate_async, transaction
from callvault.runtime import Runtime
from tests.conftest import POSTGRES_ADMIN_DSN, make_settings
from tests.servers import SeaweedFS, closed_port
from tests.worker.flow import create_application, ingest_metadata, make_wav


@asynccontextmanager
async def ready_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process on `settings`; its runtime is `client.runtime`."""
    runtime = Runtime.build(settings)
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cv.test") as client:
            client.runtime = runtime  # type: ignore[attr-defined]
            yield client
    finally:
        await runtime.close()


@asynccontextmanager
async def own_database(kind: str, tmp_path: Path, *, migrated: bool = True) -> AsyncIterator[str]:
    """A database of this test's own (the session's holds rows sealed by other tests' keys)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'own-{secrets.token_hex(3)}.db'}"
        if migrated:
            await migrate_async(url)
        yield url
        return
    name = f"callvault_ready_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
        if migrated:
            await migrate_async(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_ready_when_every_check_passes(tmp_path: Path, kind: str) -> None:
    async with own_database(kind, tmp_path) as url:
        settings = make_settings(tmp_path, url)
        async with ready_client(settings) as client:
            async with transaction(client.runtime.sessions) as session:  # type: ignore[attr-defined]
                await create_account(session, settings.keyring, "sealed with the active key")
            response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "default_store": "ok", "keys": "ok"},
    }


async def test_not_ready_without_the_database_but_still_alive(tmp_path: Path) -> None:
    away = f"postgresql://postgres@127.0.0.1:{closed_port()}/callvault"
    runtime = Runtime.build(make_settings(tmp_path, away))
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cv.test") as client:
            response = await client.get("/ready")
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["checks"] == {
                "database": "unavailable",
                "default_store": "ok",
                "keys": "unavailable",
            }
            assert (await client.get("/health")).status_code == 200
            # any API call that needs the database: 503 + Retry-After in Telnyx's format
            listed = await client.get("/v2/recordings", headers={"Authorization": "Bearer KEY-x"})
            assert listed.status_code == 503, listed.text
            assert listed.json()["errors"][0]["title"] == "Service unavailable"
            assert listed.headers["retry-after"] == "5"
    finally:
        await runtime.close()


async def test_a_missing_default_store_bucket_fails_ready_and_ingest_says_configuration(
    tmp_path: Path,
    fresh_sqlite: Callable[[Path], str],
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqlite_url = fresh_sqlite(tmp_path / "db")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    missing = (
        f"s3://no-such-bucket-{secrets.token_hex(4)}?region=us-east-1&endpoint={seaweedfs.endpoint}"
    )
    settings = make_settings(tmp_path, sqlite_url, default_store_url=missing)
    async with ready_client(settings) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["default_store"] == "bucket missing"
        assert response.json()["checks"]["database"] == "ok"
        # ingest: a configuration error (5xx with its own code), not "try again"
        runtime: Runtime = client.runtime  # type: ignore[attr-defined]
        async with transaction(runtime.sessions) as session:
            account = await create_account(session, runtime.settings.keyring, "missing bucket")
        connection_id = await create_application(client, account.api_key, "https://example.com/h")
        with structlog.testing.capture_logs() as logs:
            for _ in range(2):
                ingest = await client.post(
                    "/internal/v1/recordings",
                    headers={"Authorization": f"Bearer {settings.ingest_token}"},
                    files={
                        "metadata": (
                            None,
                            json.dumps(ingest_metadata(connection_id)),
                            "application/json",
                        ),
                        "audio": ("a.wav", make_wav(), "audio/wav"),
                    },
                )
                assert ingest.status_code == 500, ingest.text
                error = ingest.json()["errors"][0]
                assert error["code"] == "190008"
                assert "try again" not in error["detail"] and "NoSuchBucket" in error["detail"]
                assert "retry-after" not in ingest.headers
        # logged once per process, not once per refused recording
        assert [log["event"] for log in logs if log["log_level"] == "error"] == [
            "default store misconfigured"
        ]


async def test_keys_that_do_not_open_the_data_fail_ready(tmp_path: Path) -> None:
    async with own_database("sqlite", tmp_path) as sqlite_url:
        await keys_do_not_open(tmp_path, sqlite_url)


async def keys_do_not_open(tmp_path: Path, sqlite_url: str) -> None:
    writer = make_settings(tmp_path / "a", sqlite_url)
    runtime = Runtime.build(writer)
    try:
        async with transaction(runtime.sessions) as session:
            await create_account(session, runtime.settings.keyring, "sealed with key A")
    finally:
        await runtime.close()
    async with ready_client(make_settings(tmp_path / "b", sqlite_url)) as client:
        response = await client.get("/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["keys"] == "do not open the stored data"
    # the first key again, after the other (old keys after the active one): ready
    both = make_settings(
        tmp_path / "c",
        sqlite_url,
        encryption_keys_b64=[
            base64.b64encode(secrets.token_bytes(32)).decode(),
            *writer.encryption_keys_b64,
        ],
    )
    async with ready_client(both) as client:
        assert (await client.get("/ready")).json()["checks"]["keys"] == "ok"


async def test_a_database_behind_the_migrations_fails_ready(tmp_path: Path) -> None:
    async with own_database("postgresql", tmp_path, migrated=False) as url:
        async with ready_client(make_settings(tmp_path, url)) as client:
            response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "migrations pending (run callvault migrate)"
