"""Pure payload builders against the seed's first example (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from callvault.webhooks import payloads

SEED_V1 = json.loads(
    """{
"created_at": "2022-02-04T11:36:13.612978Z",
"event_type": "recording_saved",
"payload": {
"call_control_id": "9977677e-85ae-11ec-826d-02420a0d7e70",
"call_leg_id": "9977677e-85ae-11ec-826d-02420a0d7e70",
"call_session_id": "99706bb8-85ae-11ec-885c-02420a0d7e70",
"channels": "single",
"client_state": null,
"connection_id": "1684641123236054244",
"end_time": "2022-02-04T11:36:12.788447Z",
"format": "wav",
"occurred_at": "2022-02-04T11:36:13.508869Z",
"public_recording_urls": {},
"recording_ended_at": "2022-02-04T11:36:12.788447Z",
"recording_id": "10cd86ac-fef8-4765-b203-0f7511f9fc75",
"recording_started_at": "2022-02-04T11:36:08.148619Z",
"recording_urls": {
"wav": "https://s3.amazonaws.com/telephony-recorder-prod/047e057e-cb46-4b11-bb31-37987e753ed7/2022-02-04/9977677e-85ae-11ec-826d-02420a0d7e70-1643974566.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=xxx%2Faws4_request&X-Amz-Date=20220204T113613Z&X-Amz-Expires=600&X-Amz-SignedHeaders=host&X-Amz-Signature=xxx"
},
"start_time": "2022-02-04T11:36:08.148619Z"
},
"record_type": "event",
"webhook_id": "a6854826-41ae-4781-b299-415a760663a0"
}"""
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


SEED_STARTED = at("2022-02-04T11:36:08.148619Z")
SEED_ENDED = at("2022-02-04T11:36:12.788447Z")


@dataclass
class SeedRecording:
    id: str = "10cd86ac-fef8-4765-b203-0f7511f9fc75"
    connection_id: str = "1684641123236054244"
    call_control_id: str = "9977677e-85ae-11ec-826d-02420a0d7e70"
    call_leg_id: str = "9977677e-85ae-11ec-826d-02420a0d7e70"
    call_session_id: str = "99706bb8-85ae-11ec-885c-02420a0d7e70"
    format: str = "wav"
    channels: str = "single"
    client_state: str | None = None
    recording_started_at: datetime = SEED_STARTED
    recording_ended_at: datetime = SEED_ENDED


SEED_URL = SEED_V1["payload"]["recording_urls"]["wav"]


def test_v1_saved_is_exactly_the_seed() -> None:
    payload = payloads.saved_payload(
        SeedRecording(),
        recording_url=SEED_URL,
        occurred_at=at("2022-02-04T11:36:13.508869Z"),
        api_version="1",
    )
    body = payloads.envelope(
        event_id="a6854826-41ae-4781-b299-415a760663a0",
        event_type=payloads.SAVED,
        api_version="1",
        payload=payload,
        occurred_at=at("2022-02-04T11:36:13.508869Z"),
        created_at=at("2022-02-04T11:36:13.612978Z"),
        attempt=1,
        delivered_to="https://example.com/hook",
    )
    assert body == SEED_V1
    # same keys in the same order as the seed, too
    assert list(json.loads(payloads.serialize(body))["payload"]) == list(SEED_V1["payload"])


def test_v2_saved_envelope() -> None:
    occurred = at("2022-02-04T11:36:13.508869Z")
    payload = payloads.saved_payload(
        SeedRecording(client_state="aGF2ZSBhIG5pY2UgZGF5ID1d"),
        recording_url="s3://bucket/key",
        occurred_at=occurred,
        api_version="2",
    )
    body = payloads.envelope(
        event_id="ev-1",
        event_type=payloads.SAVED,
        api_version="2",
        payload=payload,
        occurred_at=occurred,
        created_at=occurred,
        attempt=3,
        delivered_to="https://example.com/failover",
    )
    assert body["meta"] == {"attempt": 3, "delivered_to": "https://example.com/failover"}
    data = body["data"]
    assert data["event_type"] == "call.recording.saved"
    assert data["id"] == "ev-1"
    assert data["occurred_at"] == "2022-02-04T11:36:13.508869Z"
    assert data["record_type"] == "event"
    expected = {k: v for k, v in SEED_V1["payload"].items() if k != "occurred_at"}
    expected["recording_urls"] = {"wav": "s3://bucket/key"}
    expected["client_state"] = "aGF2ZSBhIG5pY2UgZGF5ID1d"
    assert data["payload"] == expected


@pytest.mark.parametrize(
    ("version", "name"), [("1", "recording_error"), ("2", "call.recording.error")]
)
def test_error_event(version: str, name: str) -> None:
    occurred = at("2024-05-01T10:00:00Z")
    payload = payloads.error_payload(
        SeedRecording(),
        reason="Failed to authorize with storage using custom credentials",
        detail="s3 bucket b: SignatureDoesNotMatch",
        occurred_at=occurred,
        api_version=version,
    )
    body = payloads.envelope(
        event_id="ev-2",
        event_type=payloads.ERROR,
        api_version=version,
        payload=payload,
        occurred_at=occurred,
        created_at=occurred,
        attempt=1,
        delivered_to="https://example.com/hook",
    )
    fields = {
        "call_control_id",
        "call_leg_id",
        "call_session_id",
        "client_state",
        "connection_id",
        "recording_id",
        "reason",
        "detail",
    }
    if version == "1":
        assert body["event_type"] == name
        assert set(body["payload"]) == fields | {"occurred_at"}
    else:
        assert body["data"]["event_type"] == name
        assert set(body["data"]["payload"]) == fields
    got = body["payload"] if version == "1" else body["data"]["payload"]
    assert got["reason"] == "Failed to authorize with storage using custom credentials"
    assert got["recording_id"] == SeedRecording.id


def test_timestamp_form() -> None:
    assert payloads.timestamp(datetime(2022, 2, 4, 11, 36, 13, tzinfo=UTC)) == (
        "2022-02-04T11:36:13.000000Z"
    )
    plus_two = timezone(timedelta(hours=2))
    assert payloads.timestamp(datetime(2022, 2, 4, 13, 0, 0, 5, tzinfo=plus_two)) == (
        "2022-02-04T11:00:00.000005Z"
    )
    with pytest.raises(ValueError):
        payloads.timestamp(datetime(2022, 2, 4))


def test_fresh_link_replaces_only_the_url() -> None:
    payload = payloads.saved_payload(
        SeedRecording(),
        recording_url="old",
        occurred_at=at("2022-02-04T11:36:13Z"),
        api_version="2",
    )
    fresh = payloads.with_recording_url(payload, "wav", "new")
    assert fresh["recording_urls"] == {"wav": "new"}
    assert payload["recording_urls"] == {"wav": "old"}
    assert {k: v for k, v in fresh.items() if k != "recording_urls"} == {
        k: v for k, v in payload.items() if k != "recording_urls"
    }


def test_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError):
        payloads.envelope(
            event_id="e",
            event_type=payloads.SAVED,
            api_version="3",
            payload={},
            occurred_at=at("2022-02-04T11:36:13Z"),
            created_at=at("2022-02-04T11:36:13Z"),
            attempt=1,
            delivered_to="u",
        )
