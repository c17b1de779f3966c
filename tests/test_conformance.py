"""The conformance check itself (tests/conformance.py): it finds the spec, passes what Telnyx's
schemas allow, and fails on drift — so the check applied to every answer of the suite's API
flows (the `api` fixture's response hook, the SDK tests) can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import conformance
from tests.conformance import SpecMissing, check_response

RECORDING: dict[str, Any] = {
    "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "record_type": "recording",
    "call_control_id": "v3:abc",
    "call_leg_id": "leg",
    "call_session_id": "session",
    "connection_id": "1684641123236054244",
    "conference_id": None,
    "from": "+15551234567",
    "to": None,
    "initiated_by": None,
    "channels": "single",
    "created_at": "2024-01-01T00:00:00.000Z",
    "updated_at": "2024-01-01T00:00:00.000Z",
    "recording_started_at": "2024-01-01T00:00:00.000Z",
    "recording_ended_at": "2024-01-01T00:00:01.000Z",
    "duration_millis": 1000,
    "download_urls": {"wav": "https://example.com/x.wav"},
    "source": "call",
    "status": "completed",
    # documented extensions
    "format": "wav",
    "size_bytes": 10,
    "sha256": "0" * 64,
    "storage": {
        "state": "stored",
        "location": "default",
        "backend": None,
        "error": None,
        "detail": None,
    },
}


def problems(body: dict[str, Any], path: str = "/v2/recordings/x", status: int = 200) -> list[str]:
    return check_response("GET", path, status, json.dumps(body))


def test_the_spec_file_is_found() -> None:
    assert conformance.spec_path().name == "telnyx-openapi-subset.yml"
    assert "/recordings" in conformance.spec()["paths"]


def test_a_missing_spec_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(conformance, "REPO", tmp_path / "repo")
    monkeypatch.delenv("CALLVAULT_TELNYX_SPEC", raising=False)
    with pytest.raises(SpecMissing, match="not found"):
        conformance.spec_path()


def test_a_conforming_recording_with_documented_extensions_passes() -> None:
    assert problems({"data": RECORDING}) == []


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"colour": "red"}, "a field Telnyx does not have"),
        ({"status": "stored"}, "a value outside the enum"),
        ({"duration_millis": "1000"}, "a wrong type"),
        ({"download_urls": {"wav": 5}}, "a wrong nested type"),
        ({"source": None, "record_type": "rec"}, "an enum"),
    ],
)
def test_drift_fails(change: dict[str, Any], why: str) -> None:
    assert problems({"data": {**RECORDING, **change}}), why


def test_errors_are_checked_too() -> None:
    good = {
        "errors": [{"code": "10005", "title": "Resource not found", "source": {"pointer": "/x"}}]
    }
    assert problems(good, status=404) == []
    assert problems({"errors": [{"title": "no code"}]}, status=404)
    # a status the operation does not list: still Telnyx's error body
    assert check_response("POST", "/v2/call_control_applications", 400, json.dumps(good)) == []
    assert check_response("POST", "/v2/call_control_applications", 400, '{"detail": "x"}')


def test_operations_outside_the_spec_are_not_checked() -> None:
    assert check_response("GET", "/v2/webhook_signing_key", 200, '{"anything": 1}') == []
