"""The official Node SDK (npm `telnyx` 7.24.0, the `latest` tag; pinned in package.json and
installed by `make setup`) sends the same requests as the Python one: every recordings filter,
an application with every field, partial update, list filter, webhook deliveries, and an
unknown filter refused. Node itself is needed (it runs Azurite too)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.config import Settings
from callvault.db import transaction
from callvault.runtime import Runtime
from callvault.webhooks.models import EventStatus, WebhookEvent
from tests.conftest import LiveServer
from tests.test_sdk_fidelity import FULL_APPLICATION, facts
from tests.worker.flow import create_application, ingest, make_wav

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "node" / "sdk_check.mjs"


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(settings, run_worker=False).start()
    yield live
    live.stop()


async def run_node(payload: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not installed (make setup needs it for Azurite too)"
    assert (REPO / "node_modules" / "telnyx").is_dir(), "run `make setup` (npm ci)"
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        json.dumps(payload),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def test_node_sdk_drives_filters_fields_and_deliveries(
    server: LiveServer, runtime: Runtime, account: NewAccount
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        app_a = await create_application(http, account.api_key, "https://example.com/a")
        app_b = await create_application(http, account.api_key, "https://example.com/b")
        sent_a = facts("a", datetime(2024, 3, 10, tzinfo=UTC))
        sent_b = facts("b", datetime(2024, 1, 10, tzinfo=UTC))
        token = server.settings.ingest_token
        id_a, _ = await ingest(http, token, app_a, make_wav(0.2), **sent_a)
        id_b, _ = await ingest(http, token, app_b, make_wav(0.2), **sent_b)
    event_id = str(uuid.uuid4())
    async with transaction(runtime.sessions) as session:
        session.add(
            WebhookEvent(
                id=event_id,
                account_id=account.account_id,
                application_id=app_a,
                event_type="call.recording.saved",
                api_version="2",
                payload={"recording_id": id_a},
                status=EventStatus.FAILED,
                attempts=1,
                next_attempt_at=None,
            )
        )
    between = "2024-02-10T00:00:00Z"
    filters: dict[str, dict[str, Any]] = {
        "connection_id": {"connection_id": app_a},
        "call_control_id": {"call_control_id": sent_b["call_control_id"]},
        "call_leg_id": {"call_leg_id": sent_a["call_leg_id"]},
        "call_session_id": {"call_session_id": sent_b["call_session_id"]},
        "conference_id": {"conference_id": sent_a["conference_id"]},
        "conference_region": {"conference_region": sent_b["conference_region"]},
        "from": {"from": sent_a["from"]},
        "to": {"to": sent_b["to"]},
        "sip_call_id": {"sip_call_id": sent_a["sip_call_id"]},
        "start_time.gte": {"start_time": {"gte": between}},
        "end_time.lte": {"end_time": {"lte": between}},
        "created_at.gte": {"created_at": {"gte": "2000-01-01T00:00:00Z"}},
    }
    expected = {
        "connection_id": id_a,
        "call_control_id": id_b,
        "call_leg_id": id_a,
        "call_session_id": id_b,
        "conference_id": id_a,
        "conference_region": id_b,
        "from": id_a,
        "to": id_b,
        "sip_call_id": id_a,
        "start_time.gte": id_a,
        "end_time.lte": id_b,
    }
    fields = {k: v for k, v in FULL_APPLICATION.items() if k != "tags"}
    result = await run_node(
        {
            "apiKey": account.api_key,
            "baseURL": f"{server.url}/v2",
            "filters": filters,
            "recordingId": id_a,
            "application": {**fields, "application_name": f"node-{uuid.uuid4().hex[:6]}"},
        }
    )
    both = {id_a, id_b}
    for name, wanted in expected.items():
        assert set(result["filters"][name]) & both == {wanted}, name
    assert set(result["filters"]["created_at.gte"]) >= both
    recording = result["recording"]
    assert (
        recording["from"] == sent_a["from"]
        and recording["conference_id"] == sent_a["conference_id"]
    )
    created, updated = result["created"], result["updated"]
    for name, value in fields.items():
        if name != "application_name":
            assert created[name] == value, name
    assert updated["dtmf_type"] == "Inband" and updated["inbound"] == created["inbound"]
    assert updated["application_name"] == "node-renamed"
    assert created["id"] in result["listedByName"]
    assert event_id in result["deliveries"]
    unknown = result["errors"]["unknownFilter"]
    assert unknown["status"] == 400
    assert unknown["errors"][0]["source"]["parameter"] == "filter[form]"
