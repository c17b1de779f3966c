"""GET /v2/webhook_deliveries(+/{id}): every attempt, every filter, tenancy, the retry action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from callvault.accounts.service import NewAccount
from callvault.runtime import Runtime
from callvault.worker.runner import Worker
from tests.conftest import auth, free_port
from tests.receiver import WebhookReceiver
from tests.worker.flow import create_application, events_for, ingest, make_wav, wait_until

AUDIO = make_wav(0.2)
BASE = "/v2/webhook_deliveries"


async def delivery_of(
    api: httpx.AsyncClient, account: NewAccount, runtime: Runtime, recording_id: str, status: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        events = await events_for(runtime, recording_id)
        if len(events) != 1:
            return False
        response = await api.get(f"{BASE}/{events[0].id}", headers=auth(account))
        if response.status_code != 200 or response.json()["data"]["status"] != status:
            return False
        found.update(response.json()["data"])
        return True

    await wait_until(reached, within=20, what=f"delivery {status}")
    return found


async def listed(api: httpx.AsyncClient, account: NewAccount, **params: str) -> set[str]:
    response = await api.get(BASE, params={"page[size]": "250", **params}, headers=auth(account))
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["data"]}


async def test_delivery_record_shows_every_attempt_and_every_filter_filters(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    other_account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(503, times=1, path="/primary")
    webhook_receiver.answer_headers = [
        ("Set-Cookie", "session=receiver-secret"),
        ("Authorization", "Bearer receiver-secret"),
        ("X-Receiver", "kept"),
    ]
    primary, failover = webhook_receiver.url("/primary"), webhook_receiver.url("/failover")
    ok_app = await create_application(api, account.api_key, primary, failover_url=failover)
    dead_url = f"http://127.0.0.1:{free_port()}/nobody"
    dead_app = await create_application(api, account.api_key, dead_url, api_version="1")
    await start_worker()
    ok_recording, _ = await ingest(api, runtime.settings.ingest_token, ok_app, AUDIO)
    dead_recording, _ = await ingest(api, runtime.settings.ingest_token, dead_app, AUDIO)

    delivered = await delivery_of(api, account, runtime, ok_recording, "delivered")
    assert delivered["record_type"] == "webhook_delivery"
    assert delivered["user_id"] == account.account_id
    assert delivered["webhook"]["event_type"] == "call.recording.saved"
    assert delivered["webhook"]["id"] == delivered["id"]
    assert delivered["webhook"]["payload"]["recording_id"] == ok_recording
    # newest first: the failover took it after the primary answered 503
    first, second = delivered["attempts"][1], delivered["attempts"][0]
    assert first["status"] == "failed" and second["status"] == "delivered"
    assert first["http"]["request"]["url"] == primary
    assert second["http"]["request"]["url"] == failover
    assert first["http"]["response"]["status"] == 503 and first["errors"] == [190101]
    assert second["http"]["response"]["status"] == 200 and second["errors"] == []
    assert second["http"]["response"]["body"] == '{"ok":true}'
    assert ["Content-Type", "application/json"] in second["http"]["response"]["headers"]
    request_headers = dict(second["http"]["request"]["headers"])
    assert request_headers["User-Agent"] == "telnyx-webhooks"
    # a signature over a deterministic body is replayable for 300 s: never shown
    assert request_headers["telnyx-signature-ed25519"] == "[redacted]"
    assert request_headers["telnyx-timestamp"].isdigit()
    # the receiver's cookies and credentials are not kept, its other headers are
    kept = second["http"]["response"]["headers"]
    assert ["X-Receiver", "kept"] in kept
    assert "receiver-secret" not in str(delivered)
    assert delivered["started_at"] == first["started_at"]
    assert delivered["finished_at"] == second["finished_at"]
    assert delivered["next_attempt_at"] is None

    # refused connections: failed so far, retried later, no response
    dead = await delivery_of(api, account, runtime, dead_recording, "failed")
    assert dead["webhook"]["event_type"] == "recording_saved"  # API v1, as sent
    assert dead["attempts"][0]["errors"] == [190103]
    assert dead["attempts"][0]["http"]["response"] is None
    assert dead["attempts"][0]["error_detail"]
    assert dead["next_attempt_at"] is not None

    ok_id, dead_id = delivered["id"], dead["id"]
    both = {ok_id, dead_id}
    assert both <= await listed(api, account)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases: list[tuple[dict[str, str], str]] = [
        ({"filter[status][eq]": "delivered"}, ok_id),
        ({"filter[status][eq]": "failed"}, dead_id),
        ({"filter[webhook][contains]": ok_recording}, ok_id),
        ({"filter[attempts][contains]": "/nobody"}, dead_id),
        ({"filter[attempts][contains]": "/failover"}, ok_id),
    ]
    for params, expected in cases:
        found = await listed(api, account, **params) & both
        assert found == {expected}, params
    assert both <= await listed(api, account, **{"filter[event_type]": "call.recording.saved"})
    assert not both & await listed(api, account, **{"filter[event_type]": "call.recording.error"})
    assert both <= await listed(api, account, **{"filter[event_type]": "x,recording_saved"})
    for name in ("started_at", "finished_at"):
        assert both <= await listed(api, account, **{f"filter[{name}][gte]": past})
        assert not both & await listed(api, account, **{f"filter[{name}][gte]": future})
        assert both <= await listed(api, account, **{f"filter[{name}][lte]": future})
        assert not both & await listed(api, account, **{f"filter[{name}][lte]": past})

    # paging
    page = await api.get(BASE, params={"page[size]": "1"}, headers=auth(account))
    assert page.json()["meta"]["page_size"] == 1 and len(page.json()["data"]) == 1
    assert page.json()["meta"]["total_pages"] == page.json()["meta"]["total_results"]

    # tenancy: another account sees nothing of it
    assert (await api.get(f"{BASE}/{ok_id}", headers=auth(other_account))).status_code == 404
    assert not both & await listed(api, other_account)

    # bad input
    for params in (
        {"filter[status][eq]": "pending"},
        {"filter[started_at][gte]": "yesterday"},
        {"page[size]": "251"},
    ):
        response = await api.get(BASE, params=params, headers=auth(account))
        assert response.status_code == 422, params
    unknown = await api.get(BASE, params={"filter[stauts][eq]": "x"}, headers=auth(account))
    assert unknown.status_code == 400
    assert unknown.json()["errors"][0]["source"] == {"parameter": "filter[stauts][eq]"}
    assert (await api.get(f"{BASE}/not-a-uuid", headers=auth(account))).status_code == 404


async def test_the_retry_action_works_on_delivery_ids(
    api: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
    start_worker: Callable[..., Worker],
) -> None:
    webhook_receiver.answer(404, times=1)  # a 4xx: given up at once
    app = await create_application(api, account.api_key, webhook_receiver.url())
    await start_worker()
    recording_id, _ = await ingest(api, runtime.settings.ingest_token, app, AUDIO)
    failed = await delivery_of(api, account, runtime, recording_id, "failed")
    assert failed["next_attempt_at"] is None and len(failed["attempts"]) == 1

    retry = await api.post(f"{BASE}/{failed['id']}/actions/retry", headers=auth(account))
    assert retry.status_code == 202, retry.text
    delivered = await delivery_of(api, account, runtime, recording_id, "delivered")
    assert delivered["id"] == failed["id"]
    assert [a["status"] for a in delivered["attempts"]] == ["delivered", "failed"]
