"""Pure parts of the delivery record: what is kept of an answer, error codes, event types."""

from __future__ import annotations

from datetime import UTC, datetime

from callvault.outbound.transport import refused_detail
from callvault.webhooks.attempt import RECORDED_BODY_BYTES, header_pairs, recorded_body
from callvault.webhooks.deliveries import attempt_errors, parse_event_types, to_delivery
from callvault.webhooks.models import EventStatus, WebhookAttempt, WebhookEvent
from callvault.webhooks.recorded_headers import (
    REDACTED,
    recorded_request_headers,
    recorded_response_headers,
)


def test_the_first_4_kb_of_an_answer_are_kept_without_nul() -> None:
    assert recorded_body(b"ok\x00\xff" + b"x" * 10_000)[:4] == "ok\ufffd\ufffd"
    assert len(recorded_body(b"x" * 10_000)) == RECORDED_BODY_BYTES


def test_headers_are_pairs_cut_at_10_kb() -> None:
    pairs = header_pairs([("A", "1"), ("B", "x" * 9_000), ("C", "y" * 2_000)])
    assert pairs == [["A", "1"], ["B", "x" * 9_000]]


def attempt(**values: object) -> WebhookAttempt:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, object] = {
        "event_id": "e",
        "attempt": 1,
        "url": "https://example.com/hooks",
        "status_code": None,
        "error": None,
        "created_at": now,
    }
    fields.update(values)
    return WebhookAttempt(**fields)


def test_attempt_error_codes() -> None:
    assert attempt_errors(attempt(status_code=200)) == []
    assert attempt_errors(attempt(status_code=404, error="HTTP 404")) == [190101]
    assert attempt_errors(attempt(error="timed out after 2 s")) == [190102]
    assert attempt_errors(attempt(error="ConnectError: All connection attempts failed")) == [190103]
    refused = refused_detail("hooks.example.com", "10.0.0.1")
    assert attempt_errors(attempt(error=refused)) == [190104]


def test_event_types_accept_api_v1_names() -> None:
    assert parse_event_types(" recording_saved, call.recording.error ,,") == (
        "call.recording.error",
        "call.recording.saved",
    )


def test_a_pending_event_with_failed_attempts_is_failed_with_its_next_attempt() -> None:
    moment = datetime(2026, 1, 1, 12, tzinfo=UTC)
    event = WebhookEvent(
        id="0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
        account_id="a",
        application_id="1",
        event_type="call.recording.saved",
        api_version="2",
        payload={"recording_id": "r"},
        occurred_at=moment,
        created_at=moment,
        status=EventStatus.PENDING,
        attempts=1,
        next_attempt_at=moment,
    )
    record = to_delivery(event, [attempt(status_code=503, error="HTTP 503")])
    assert record.status == "failed"
    assert record.next_attempt_at == "2026-01-01T12:00:00.000000Z"
    assert record.webhook.model_dump(exclude_none=True) == {
        "event_type": "call.recording.saved",
        "id": event.id,
        "occurred_at": "2026-01-01T12:00:00.000000Z",
        "payload": {"recording_id": "r"},
        "record_type": "event",
    }
    assert record.attempts[0].http.response is not None
    assert record.attempts[0].http.response.status == 503


def test_the_signature_is_recorded_redacted_and_answer_credentials_are_dropped() -> None:
    sent = header_pairs(
        recorded_request_headers(
            [("Content-Type", "application/json"), ("telnyx-signature-ed25519", "c2ln")]
        )
    )
    assert sent == [["Content-Type", "application/json"], ["telnyx-signature-ed25519", REDACTED]]
    answer = [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("Authorization", "Bearer x"),
        ("Proxy-Authorization", "Basic x"),
        ("Cookie", "c=3"),
        ("X-Api-Key", "k"),
    ]
    assert header_pairs(recorded_response_headers(answer)) == [["Content-Type", "text/plain"]]
