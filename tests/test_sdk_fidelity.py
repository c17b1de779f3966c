"""The official Python SDK (telnyx, pinned) through every recordings filter and field, every
application field and filter, and the webhook deliveries resource, on both databases.

Every filter gets its own case with a recording that must match and one that must not. Every
answer the SDK receives is also checked against Telnyx's schemas (tests/conformance.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import telnyx
from sqlalchemy import func, select, update

from callvault.accounts.service import NewAccount
from callvault.config import Settings
from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from tests.conftest import LiveServer, conforms_to_spec
from tests.receiver import WebhookReceiver
from tests.worker.flow import (
    bearer,
    create_application,
    ingest,
    ingest_metadata,
    make_wav,
    wait_until,
)

AUDIO = make_wav(0.2)


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    live = LiveServer(settings, run_worker=False).start()
    yield live
    live.stop()


def sdk(server: LiveServer, account: NewAccount) -> telnyx.AsyncTelnyx:
    return telnyx.AsyncTelnyx(
        api_key=account.api_key,
        base_url=f"{server.url}/v2",
        max_retries=0,
        timeout=20,
        http_client=httpx.AsyncClient(event_hooks={"response": [conforms_to_spec]}),
    )


@pytest.fixture
async def client(server: LiveServer, account: NewAccount) -> telnyx.AsyncTelnyx:
    return sdk(server, account)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, timeout=20, event_hooks={"response": [conforms_to_spec]}
    ) as plain:
        yield plain


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def facts(tag: str, started: datetime) -> dict[str, Any]:
    """Ingest metadata overrides giving a recording its own value of every filtered field."""
    leg = str(uuid.uuid4())
    return {
        "call_control_id": f"v3:{tag}-{leg}",
        "call_leg_id": leg,
        "call_session_id": str(uuid.uuid4()),
        "conference_id": f"conf-{tag}-{uuid.uuid4().hex[:8]}",
        "conference_region": f"r{tag}",
        "from": f"+1555{uuid.uuid4().int % 10**7:07d}",
        "to": f"+1444{uuid.uuid4().int % 10**7:07d}",
        "sip_call_id": f"{uuid.uuid4().hex}@sip.example.com",
        "initiated_by": "StartCallRecordingAPI",
        "recording_started_at": iso(started),
        "recording_ended_at": iso(started + timedelta(seconds=30)),
    }


async def ids(client: telnyx.AsyncTelnyx, **params: Any) -> set[str]:
    return {item.id async for item in client.recordings.list(page_size=250, **params) if item.id}


async def test_every_recording_filter_filters_and_every_field_passes_through(
    server: LiveServer,
    client: telnyx.AsyncTelnyx,
    http: httpx.AsyncClient,
    runtime: Runtime,
    account: NewAccount,
) -> None:
    token = server.settings.ingest_token
    app_a = await create_application(http, account.api_key, "https://example.com/a")
    app_b = await create_application(http, account.api_key, "https://example.com/b")
    early = datetime(2024, 1, 10, 8, 0, tzinfo=UTC)
    late = datetime(2024, 3, 10, 8, 0, tzinfo=UTC)
    sent_a, sent_b = facts("a", late), facts("b", early)
    id_a, _ = await ingest(http, token, app_a, AUDIO, **sent_a)
    id_b, _ = await ingest(http, token, app_b, AUDIO, **sent_b)
    # created_at: B was created a day before A
    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(Recording)
            .where(Recording.id == id_b)
            .values(created_at=datetime.now(UTC) - timedelta(days=1))
        )
    both = {id_a, id_b}

    recording = (await client.recordings.retrieve(id_a)).data
    assert recording is not None
    assert recording.from_ == sent_a["from"] and recording.to == sent_a["to"]
    assert recording.conference_id == sent_a["conference_id"]
    assert recording.initiated_by == "StartCallRecordingAPI"
    assert recording.call_leg_id == sent_a["call_leg_id"]
    assert recording.source == "call" and recording.status == "completed"

    assert await ids(client) >= both
    between = iso(datetime(2024, 2, 10, tzinfo=UTC))
    created_between = iso(datetime.now(UTC) - timedelta(hours=12))
    # (filter, which one matches): the other must not
    cases: list[tuple[dict[str, Any], str]] = [
        ({"connection_id": app_a}, id_a),
        ({"call_control_id": sent_b["call_control_id"]}, id_b),
        ({"call_leg_id": sent_a["call_leg_id"]}, id_a),
        ({"call_session_id": sent_b["call_session_id"]}, id_b),
        ({"conference_id": sent_a["conference_id"]}, id_a),
        ({"conference_region": sent_b["conference_region"]}, id_b),
        ({"from": sent_a["from"]}, id_a),
        ({"to": sent_b["to"]}, id_b),
        ({"sip_call_id": sent_a["sip_call_id"]}, id_a),
        ({"start_time": {"gte": between}}, id_a),
        ({"start_time": {"lte": between}}, id_b),
        ({"end_time": {"gte": between}}, id_a),
        ({"end_time": {"lte": between}}, id_b),
        ({"created_at": {"gte": created_between}}, id_a),
        ({"created_at": {"lte": created_between}}, id_b),
    ]
    for where, expected in cases:
        assert await ids(client, filter=where) & both == {expected}, where

    # combined: every filter of A at once finds A; one of B's values among them finds nothing
    everything_a: dict[str, Any] = {
        "connection_id": app_a,
        "call_control_id": sent_a["call_control_id"],
        "call_leg_id": sent_a["call_leg_id"],
        "call_session_id": sent_a["call_session_id"],
        "conference_id": sent_a["conference_id"],
        "conference_region": sent_a["conference_region"],
        "from": sent_a["from"],
        "to": sent_a["to"],
        "sip_call_id": sent_a["sip_call_id"],
        "start_time": {"gte": between, "lte": iso(late + timedelta(days=1))},
        "end_time": {"gte": between},
        "created_at": {"gte": created_between},
    }
    assert await ids(client, filter=everything_a) == {id_a}
    assert await ids(client, filter={**everything_a, "to": sent_b["to"]}) == set()


async def test_an_unknown_filter_is_400_and_deletes_nothing(
    server: LiveServer, client: telnyx.AsyncTelnyx, http: httpx.AsyncClient, account: NewAccount
) -> None:
    app = await create_application(http, account.api_key, "https://example.com/a")
    kept, _ = await ingest(http, server.settings.ingest_token, app, AUDIO)

    # a misspelled filter: a client that deletes what the list returns gets an error instead
    with pytest.raises(telnyx.BadRequestError) as refused:
        await ids(client, extra_query={"filter[form]": "+15550001111"})
    error = refused.value.body["errors"][0]  # type: ignore[index]
    assert error["source"] == {"parameter": "filter[form]"}
    assert error["code"] == "190005"

    # the bulk delete itself refuses unknown query parameters before touching anything
    response = await http.post(
        "/v2/recordings/actions/delete",
        params={"filter[connection_id]": app},
        json={"ids": [kept]},
        headers=bearer(account.api_key),
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"]["parameter"] == "filter[connection_id]"
    assert (await client.recordings.retrieve(kept)).data is not None

    for params in (
        {"filter[created_at][gte]": "yesterday"},
        {"filter[start_time][lte]": "1700000000"},
        {"page[size]": "0"},
        {"page[number]": "x"},
    ):
        bad = await http.get("/v2/recordings", params=params, headers=bearer(account.api_key))
        assert bad.status_code == 422, params
        assert bad.json()["errors"][0]["source"]["parameter"] == next(iter(params))
    assert (await client.recordings.retrieve(kept)).data is not None

    # the SDK's own deletes: one, and a list
    other, _ = await ingest(http, server.settings.ingest_token, app, AUDIO)
    deleted = (await client.recordings.delete(other)).data
    assert deleted is not None and deleted.id == other
    assert (await client.recordings.actions.delete(ids=[kept])).status == "ok"
    for gone in (kept, other):
        with pytest.raises(telnyx.NotFoundError):
            await client.recordings.retrieve(gone)


async def test_a_backslash_call_leg_id_is_refused_at_ingest_not_a_500(
    server: LiveServer, http: httpx.AsyncClient, account: NewAccount, runtime: Runtime
) -> None:
    app = await create_application(http, account.api_key, "https://example.com/a")
    for leg in ("a\\b", "..", ".hidden", "a/b"):
        response = await http.post(
            "/internal/v1/recordings",
            files={
                "metadata": (None, json.dumps(ingest_metadata(app, call_leg_id=leg))),
                "audio": ("r.wav", AUDIO, "audio/wav"),
            },
            headers=bearer(server.settings.ingest_token),
        )
        assert response.status_code == 422, (leg, response.text)
        assert response.json()["errors"][0]["source"]["pointer"] == "/metadata/call_leg_id"
    async with runtime.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Recording).where(Recording.connection_id == app)
        )
    assert count == 0


FULL_APPLICATION: dict[str, Any] = {
    "application_name": "fidelity-router",
    "webhook_event_url": "https://example.com/hooks",
    "webhook_event_failover_url": "https://failover.example.com/hooks",
    "webhook_api_version": "2",
    "webhook_timeout_secs": 25,
    "active": False,
    "anchorsite_override": "Amsterdam, Netherlands",
    "call_cost_in_webhooks": True,
    "dtmf_type": "SIP INFO",
    "first_command_timeout": True,
    "first_command_timeout_secs": 10,
    "inbound": {
        "channel_limit": 10,
        "shaken_stir_enabled": True,
        "sip_subdomain": "fidelity-example",
        "sip_subdomain_receive_settings": "only_my_connections",
    },
    "outbound": {"channel_limit": 7, "outbound_voice_profile_id": "1293384261075731499"},
    "redact_dtmf_debug_logging": True,
    "tags": ["blue", "green"],
}


async def test_every_application_field_round_trips_through_the_sdk(
    client: telnyx.AsyncTelnyx,
) -> None:
    # the spec's create request has no `tags` (its update request has): the SDK sends it as an
    # extra body field
    fields = {k: v for k, v in FULL_APPLICATION.items() if k != "tags"}
    created = (
        await client.call_control_applications.create(
            **fields, extra_body={"tags": FULL_APPLICATION["tags"]}
        )
    ).data
    assert created is not None and created.id
    written = created.model_dump(mode="json", exclude_unset=True)
    for name, value in FULL_APPLICATION.items():
        assert written[name] == value, name
    fetched = (await client.call_control_applications.retrieve(created.id)).data
    assert fetched == created

    # the SDK's update sends name and URL with the changed fields: the rest stays
    updated = (
        await client.call_control_applications.update(
            created.id,
            application_name="fidelity-renamed",
            webhook_event_url=FULL_APPLICATION["webhook_event_url"],
            tags=["red"],
            outbound={"channel_limit": 8},
        )
    ).data
    assert updated is not None
    after = updated.model_dump(mode="json", exclude_unset=True)
    expected = {
        **FULL_APPLICATION,
        "application_name": "fidelity-renamed",
        "tags": ["red"],
        "outbound": {**FULL_APPLICATION["outbound"], "channel_limit": 8},
    }
    for name, value in expected.items():
        assert after[name] == value, name

    # defaults, as the spec gives them
    plain = (
        await client.call_control_applications.create(
            application_name="fidelity-defaults", webhook_event_url="https://example.com/d"
        )
    ).data
    assert plain is not None
    assert plain.webhook_event_failover_url == ""
    assert plain.anchorsite_override == "Latency" and plain.dtmf_type == "RFC 2833"
    assert plain.first_command_timeout_secs == 30 and plain.tags == []


async def test_application_list_filters_filter(
    client: telnyx.AsyncTelnyx, http: httpx.AsyncClient, account: NewAccount
) -> None:
    suffix = uuid.uuid4().hex[:8]
    first = (
        await client.call_control_applications.create(
            application_name=f"alpha-{suffix}",
            webhook_event_url="https://example.com/a",
            outbound={"outbound_voice_profile_id": "111"},
        )
    ).data
    second = (
        await client.call_control_applications.create(
            application_name=f"beta-{suffix}",
            webhook_event_url="https://example.com/b",
            outbound={"outbound_voice_profile_id": "222"},
        )
    ).data
    assert first and second and first.id and second.id

    async def listed(**where: Any) -> set[str]:
        found = client.call_control_applications.list(filter=where, page_size=250)
        return {item.id async for item in found if item.id} & {first.id, second.id}

    assert await listed(application_name={"contains": f"ALPHA-{suffix}"}) == {first.id}
    assert await listed(outbound_outbound_voice_profile_id="222") == {second.id}
    # spec filters of call events do not apply to applications: 400, never ignored
    with pytest.raises(telnyx.BadRequestError):
        await listed(leg_id=str(uuid.uuid4()))
    response = await http.get(
        "/v2/call_control_applications",
        params={"filter[application_name][contains]": "ab"},
        headers=bearer(account.api_key),
    )
    assert response.status_code == 422


async def test_webhook_deliveries_through_the_sdk(
    settings: Settings, account: NewAccount, webhook_receiver: WebhookReceiver
) -> None:
    live = LiveServer(settings, run_worker=True).start()
    try:
        client = sdk(live, account)
        async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
            webhook_receiver.answer(500, times=1)
            app = await create_application(http, account.api_key, webhook_receiver.url())
            recording_id, _ = await ingest(http, live.settings.ingest_token, app, AUDIO)
        found: list[Any] = []

        async def delivered() -> bool:
            page = client.webhook_deliveries.list(
                filter={"status": {"eq": "delivered"}, "webhook": {"contains": recording_id}}
            )
            found[:] = [item async for item in page]
            return len(found) == 1

        await wait_until(delivered, within=30, what="a delivered webhook")
        delivery = found[0]
        assert delivery.status == "delivered" and delivery.record_type == "webhook_delivery"
        assert (
            delivery.webhook is not None and delivery.webhook.event_type == "call.recording.saved"
        )
        assert delivery.attempts and [a.status for a in delivery.attempts] == [
            "delivered",
            "failed",
        ]
        assert delivery.attempts[1].http is not None
        assert delivery.attempts[1].http.response is not None
        assert delivery.attempts[1].http.response.status == 500
        assert delivery.id
        one = await client.webhook_deliveries.retrieve(delivery.id)
        assert one.data is not None and one.data.id == delivery.id
        with pytest.raises(telnyx.NotFoundError):
            await client.webhook_deliveries.retrieve(str(uuid.uuid4()))
    finally:
        live.stop()
