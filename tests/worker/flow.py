"""Helpers for pipeline tests: applications, credentials and ingest over the HTTP API, and
reading back rows (recordings, webhook events, attempts)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.webhooks.models import WebhookAttempt, WebhookEvent
from tests.recordings.samples import make_wav
from tests.servers import SeaweedFS

__all__ = ["make_wav"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_application(
    client: httpx.AsyncClient,
    api_key: str,
    webhook_url: str,
    *,
    failover_url: str | None = None,
    api_version: str = "2",
    timeout_secs: int | None = None,
    active: bool = True,
) -> str:
    body: dict[str, Any] = {
        "application_name": f"pipeline-{uuid.uuid4().hex[:8]}",
        "webhook_event_url": webhook_url,
        "webhook_api_version": api_version,
        "active": active,
    }
    if failover_url:
        body["webhook_event_failover_url"] = failover_url
    if timeout_secs is not None:
        body["webhook_timeout_secs"] = timeout_secs
    response = await client.post(
        "/v2/call_control_applications", json=body, headers=bearer(api_key)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def s3_generic(server: SeaweedFS, bucket: str, **overrides: Any) -> dict[str, Any]:
    return {
        "bucket": bucket,
        "region": server.region,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "endpoint": server.endpoint,
        **overrides,
    }


def new_bucket(server: SeaweedFS) -> str:
    name = f"rec-{secrets.token_hex(6)}"
    server.create_bucket(name)
    return name


async def store_in_new_bucket(
    client: httpx.AsyncClient, api_key: str, connection_id: str, server: SeaweedFS
) -> dict[str, Any]:
    """s3-generic credentials for a new bucket of `server` on the connection: the configuration."""
    configuration = s3_generic(server, new_bucket(server))
    await set_credentials(client, api_key, connection_id, "s3-generic", configuration)
    return configuration


async def set_credentials(
    client: httpx.AsyncClient,
    api_key: str,
    connection_id: str,
    backend: str,
    configuration: dict[str, Any],
    *,
    replace: bool = False,
) -> None:
    response = await client.request(
        "PUT" if replace else "POST",
        f"/v2/custom_storage_credentials/{connection_id}",
        json={"backend": backend, "configuration": configuration},
        headers=bearer(api_key),
    )
    assert response.status_code == 200, response.text


def ingest_metadata(connection_id: str, **overrides: Any) -> dict[str, Any]:
    started = (
        datetime.now(UTC).replace(microsecond=0)
        - timedelta(seconds=5)
        + timedelta(microseconds=uuid.uuid4().int % 10**6)
    )
    leg = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "connection_id": connection_id,
        "call_control_id": f"v3:{leg}",
        "call_leg_id": leg,
        "call_session_id": str(uuid.uuid4()),
        "format": "wav",
        "channels": "single",
        "recording_started_at": started.isoformat().replace("+00:00", "Z"),
        "recording_ended_at": (started + timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
        "client_state": None,
    }
    fields.update(overrides)
    return fields


async def ingest(
    client: httpx.AsyncClient,
    ingest_token: str,
    connection_id: str,
    audio: bytes,
    **overrides: Any,
) -> tuple[str, dict[str, Any]]:
    """POST /internal/v1/recordings; returns the recording id and the metadata sent."""
    metadata = ingest_metadata(connection_id, **overrides)
    response = await client.post(
        "/internal/v1/recordings",
        files={
            "metadata": (None, json.dumps(metadata), "application/json"),
            "audio": ("recording.wav", audio, "audio/wav"),
        },
        headers=bearer(ingest_token),
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["id"]), metadata


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        await asyncio.sleep(0.02)


async def recording_row(runtime: Runtime, recording_id: str) -> Recording:
    async with transaction(runtime.sessions) as session:
        row = await session.get(Recording, recording_id)
    assert row is not None
    return row


async def events_for(runtime: Runtime, recording_id: str) -> list[WebhookEvent]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.recording_id == recording_id)
            .order_by(WebhookEvent.created_at)
        )
        return list(rows)


async def attempts_for(runtime: Runtime, event_id: str) -> list[WebhookAttempt]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.event_id == event_id)
            .order_by(WebhookAttempt.id)
        )
        return list(rows)


async def wait_for_status(
    runtime: Runtime, recording_id: str, status: str, *, within: float = 10.0
) -> Recording:
    async def reached() -> bool:
        return (await recording_row(runtime, recording_id)).status == status

    await wait_until(reached, within=within, what=f"recording {recording_id} {status}")
    return await recording_row(runtime, recording_id)


async def insert_recording(
    runtime: Runtime, account_id: str, connection_id: str, **fields: Any
) -> str:
    """A due recording row without bytes (for lease tests that never process it)."""
    from callvault.db import utcnow

    now = utcnow()
    leg = str(uuid.uuid4())
    values: dict[str, Any] = dict(
        id=str(uuid.uuid4()),
        account_id=account_id,
        connection_id=connection_id,
        call_control_id=f"v3:{leg}",
        call_leg_id=leg,
        call_session_id=str(uuid.uuid4()),
        format="wav",
        channels="single",
        recording_started_at=now,
        recording_ended_at=now,
        size_bytes=0,
        sha256="0" * 64,
        duration_millis=0,
        status="received",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    values.update(fields)
    async with transaction(runtime.sessions) as session:
        session.add(Recording(**values))
    return str(values["id"])


async def update_recording(runtime: Runtime, recording_id: str, **values: Any) -> None:
    from sqlalchemy import update

    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(Recording).where(Recording.id == recording_id).values(**values)
        )
