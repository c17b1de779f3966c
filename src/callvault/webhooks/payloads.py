"""Webhook bodies, built without I/O: the payload stored with an event, the envelope per attempt.

Two wire formats (reference/telnyx-api.md):
- API v1, flat, exactly the seed's first example:
  `{"created_at", "event_type": "recording_saved", "payload": {...}, "record_type": "event",
  "webhook_id"}`; the payload carries `occurred_at` as the seed does.
- API v2, an envelope: `{"data": {"event_type": "call.recording.saved", "id", "occurred_at",
  "payload": {...}, "record_type": "event"}, "meta": {"attempt": N, "delivered_to": url}}`;
  `occurred_at` sits on `data`, as in the spec's CallRecordingSaved.

Events are stored under their v2 names; v1 names are derived when the body is built.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

SAVED = "call.recording.saved"
ERROR = "call.recording.error"
V1_NAMES = {SAVED: "recording_saved", ERROR: "recording_error"}


class RecordingFacts(Protocol):
    """What a payload needs of a recording (the Recording model has all of it)."""

    id: str
    connection_id: str
    call_control_id: str
    call_leg_id: str
    call_session_id: str
    format: str
    channels: str
    client_state: str | None
    recording_started_at: datetime
    recording_ended_at: datetime


def timestamp(value: datetime) -> str:
    """The seed's form: UTC, always six fractional digits, `Z` (2022-02-04T11:36:13.612978Z)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _call_ids(recording: RecordingFacts) -> dict[str, Any]:
    return {
        "call_control_id": recording.call_control_id,
        "call_leg_id": recording.call_leg_id,
        "call_session_id": recording.call_session_id,
        "client_state": recording.client_state,
        "connection_id": recording.connection_id,
        "recording_id": recording.id,
    }


def saved_payload(
    recording: RecordingFacts,
    *,
    recording_url: str,
    occurred_at: datetime,
    api_version: str,
    encryption_details: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`call.recording.saved` / `recording_saved`: where the recording is now.

    `encryption_details` (encrypted recordings, docs/encryption.md) travel in v2 only: v1 keeps
    the seed's exact shape; its receivers read them from the Recordings API or the object's
    metadata.
    """
    started = timestamp(recording.recording_started_at)
    ended = timestamp(recording.recording_ended_at)
    payload: dict[str, Any] = {
        **_call_ids(recording),
        "channels": recording.channels,
        "end_time": ended,
        "format": recording.format,
        "public_recording_urls": {},
        "recording_ended_at": ended,
        "recording_started_at": started,
        "recording_urls": {recording.format: recording_url},
        "start_time": started,
    }
    if api_version == "1":
        payload["occurred_at"] = timestamp(occurred_at)
    elif encryption_details:
        payload["encryption_details"] = dict(encryption_details)
    return dict(sorted(payload.items()))


def error_payload(
    recording: RecordingFacts,
    *,
    reason: str,
    detail: str,
    occurred_at: datetime,
    api_version: str,
) -> dict[str, Any]:
    """`call.recording.error` / `recording_error`: why custom storage did not take it.

    `reason` is one of the spec's reasons; `detail` says precisely what failed (never a secret:
    storage reasons are redacted where they are made).
    """
    payload: dict[str, Any] = {**_call_ids(recording), "detail": detail, "reason": reason}
    if api_version == "1":
        payload["occurred_at"] = timestamp(occurred_at)
    return dict(sorted(payload.items()))


def with_recording_url(payload: dict[str, Any], format: str, url: str) -> dict[str, Any]:
    """The stored payload with a fresh link (default-store links expire after 600 s)."""
    return {**payload, "recording_urls": {format: url}}


def envelope(
    *,
    event_id: str,
    event_type: str,
    api_version: str,
    payload: dict[str, Any],
    occurred_at: datetime,
    created_at: datetime,
    attempt: int,
    delivered_to: str,
) -> dict[str, Any]:
    """The whole body of one delivery attempt in the application's API version."""
    if api_version == "1":
        return {
            "created_at": timestamp(created_at),
            "event_type": V1_NAMES[event_type],
            "payload": payload,
            "record_type": "event",
            "webhook_id": event_id,
        }
    if api_version == "2":
        return {
            "data": {
                "event_type": event_type,
                "id": event_id,
                "occurred_at": timestamp(occurred_at),
                "payload": payload,
                "record_type": "event",
            },
            "meta": {"attempt": attempt, "delivered_to": delivered_to},
        }
    raise ValueError(f"unknown webhook API version {api_version!r}")


def serialize(body: dict[str, Any]) -> str:
    """The exact text that is signed and sent (sorted keys, as the seed lists them)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"))
