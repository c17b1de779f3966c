"""Fixtures and helpers of the recordings tests: applications, multipart bodies, ingest."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from callvault.accounts.service import NewAccount
from callvault.applications.ids import new_application_id
from callvault.applications.models import Application
from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.storage.local import LocalStore

BOUNDARY = "callvault-test-boundary-7d3f"


async def add_application(runtime: Runtime, account_id: str) -> str:
    application_id = new_application_id()
    async with transaction(runtime.sessions) as session:
        session.add(
            Application(
                id=application_id,
                account_id=account_id,
                application_name="recorder",
                # nothing listens there: a worker that delivers just retries
                webhook_event_url="http://127.0.0.1:9/hooks",
            )
        )
    return application_id


@pytest.fixture
async def connection_id(runtime: Runtime, account: NewAccount) -> str:
    return await add_application(runtime, account.account_id)


@pytest.fixture
async def other_connection_id(runtime: Runtime, other_account: NewAccount) -> str:
    return await add_application(runtime, other_account.account_id)


def ingest_headers(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime.settings.ingest_token}"}


def metadata_for(connection_id: str, /, **overrides: Any) -> dict[str, Any]:
    started = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC) + timedelta(
        microseconds=uuid.uuid4().int % 10**6
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
        "recording_ended_at": (started + timedelta(seconds=1)).isoformat(),
        "client_state": None,
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not ...}


def multipart_body(parts: Iterable[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body; parts are (name, content, filename or None)."""
    out = bytearray()
    for name, content, filename in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        kind = "application/json" if name == "metadata" else "application/octet-stream"
        out += f"Content-Type: {kind}\r\n\r\n".encode()
        out += content + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


async def post_recording(
    client: httpx.AsyncClient,
    runtime: Runtime,
    metadata: dict[str, Any] | bytes | None,
    audio: bytes | None,
    *,
    audio_first: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    parts: list[tuple[str, bytes, str | None]] = []
    if metadata is not None:
        raw = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
        parts.append(("metadata", raw, None))
    if audio is not None:
        parts.insert(0 if audio_first else len(parts), ("audio", audio, "recording.bin"))
    return await client.post(
        "/internal/v1/recordings",
        content=multipart_body(parts),
        headers={"Content-Type": CONTENT_TYPE, **(headers or ingest_headers(runtime))},
    )


async def ingest_ok(
    client: httpx.AsyncClient, runtime: Runtime, connection_id: str, audio: bytes, **overrides: Any
) -> str:
    response = await post_recording(
        client, runtime, metadata_for(connection_id, **overrides), audio
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["id"])


async def recording_row(runtime: Runtime, recording_id: str) -> Recording:
    async with runtime.sessions() as session:
        row = await session.get(Recording, recording_id)
    assert row is not None
    return row


async def rows_for_connection(runtime: Runtime, connection_id: str) -> int:
    async with runtime.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Recording)
            .where(Recording.connection_id == connection_id)
        )
    return int(count or 0)


def local_store(runtime: Runtime) -> LocalStore:
    store = runtime.default_store
    assert isinstance(store, LocalStore)
    return store


def objects_of(runtime: Runtime, account_id: str) -> list[Path]:
    """The account's objects in the local default store."""
    root = local_store(runtime).root / account_id
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def incoming_files(runtime: Runtime) -> list[Path]:
    incoming = runtime.settings.data_dir / "incoming"
    return sorted(incoming.iterdir()) if incoming.exists() else []


@pytest.fixture
async def clean_incoming(runtime: Runtime) -> AsyncIterator[None]:
    """Every test that ingests must leave no temp file behind."""
    yield
    assert incoming_files(runtime) == []
