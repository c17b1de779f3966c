"""Small helpers for tests that need a Call Control application."""

from __future__ import annotations

from typing import Any

import httpx

from callvault.accounts.service import NewAccount
from tests.conftest import auth


async def create_application(
    api: httpx.AsyncClient, account: NewAccount, **fields: Any
) -> dict[str, Any]:
    body = {
        "application_name": "recorder",
        "webhook_event_url": "https://hooks.example.com/telnyx",
        **fields,
    }
    response = await api.post("/v2/call_control_applications", json=body, headers=auth(account))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data
