"""Small steps of the real flow, through the public API, for the security tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.recordings.samples import make_wav

WAV = make_wav(seconds=0.2)


def is_telnyx_error(response: httpx.Response, status: int, code: str | None = None) -> bool:
    """`status` with a body of the Telnyx error shape (and `code`, if given)."""
    if response.status_code != status:
        return False
    try:
        errors = response.json()["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    shaped = bool(errors) and all(
        isinstance(e.get("code"), str) and isinstance(e.get("title"), str) for e in errors
    )
    return shaped and (code is None or errors[0]["code"] == code)


async def create_application(
    api: httpx.AsyncClient, account: NewAccount, url: str = "https://hooks.example.com/t"
) -> str:
    response = await api.post(
        "/v2/call_control_applications",
        json={"application_name": "security", "webhook_event_url": url},
        headers=auth(account),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def metadata(connection_id: str, **overrides: Any) -> dict[str, Any]:
    started = datetime(2025, 3, 1, 12, 0, tzinfo=UTC) + timedelta(
        milliseconds=uuid.uuid4().int % 10**9
    )
    leg = str(uuid.uuid4())
    return {
        "connection_id": connection_id,
        "call_control_id": f"v3:{leg}",
        "call_leg_id": leg,
        "call_session_id": str(uuid.uuid4()),
        "format": "wav",
        "channels": "single",
        "recording_started_at": started.isoformat(),
        "recording_ended_at": (started + timedelta(seconds=1)).isoformat(),
        "client_state": None,
        **overrides,
    }


async def post_ingest(
    api: httpx.AsyncClient, token: str, meta: dict[str, Any], audio: bytes = WAV
) -> httpx.Response:
    return await api.post(
        "/internal/v1/recordings",
        files={
            "metadata": (None, json.dumps(meta).encode(), "application/json"),
            "audio": ("recording.wav", audio, "audio/wav"),
        },
        headers={"Authorization": f"Bearer {token}"},
    )


async def ingest(
    api: httpx.AsyncClient, runtime: Runtime, connection_id: str, **overrides: Any
) -> str:
    response = await post_ingest(
        api, runtime.settings.ingest_token, metadata(connection_id, **overrides)
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["id"])
