"""Posting a finished recording to callvault's ingest endpoint, and what the answer means.

200/202: stored (202 new, 200 the same recording again: ingest's idempotency). 503, 507, 429,
408, other 5xx, 401/403 (a token being rotated) and a server that cannot be reached: try again
later, `Retry-After` honoured; the spool keeps the call. Any other 4xx: ingest refused this
recording for good (bad metadata, bad audio): the call goes to failed/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from callvault.recordings.cli import error_lines

TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_RETRY_SECONDS = 2.0
MAX_RETRY_SECONDS = 300.0
_RETRY = {401, 403, 408, 425, 429, 503, 507}


@dataclass(frozen=True)
class Answer:
    outcome: str  # "stored", "retry" or "refused"
    detail: str = ""
    recording_id: str | None = None
    created: bool = False
    retry_after: float = DEFAULT_RETRY_SECONDS


def retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return DEFAULT_RETRY_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_SECONDS)


def post_recording(
    client: httpx.Client, server: str, token: str, audio: Path, metadata: dict[str, Any]
) -> Answer:
    url = server.rstrip("/") + "/internal/v1/recordings"
    content_type = "audio/wav" if metadata.get("format") == "wav" else "audio/mpeg"
    try:
        with audio.open("rb") as handle:
            response = client.post(
                url,
                headers={"Authorization": f"Bearer {token}"},
                data={"metadata": json.dumps(metadata)},
                files={"audio": (audio.name, handle, content_type)},
            )
    except httpx.HTTPError as exc:
        return Answer("retry", f"cannot reach {server}: {type(exc).__name__}")
    status = response.status_code
    if status in (200, 202):
        recording_id = str(response.json()["data"]["id"])
        return Answer("stored", recording_id=recording_id, created=status == 202)
    detail = f"{status}: " + "; ".join(error_lines(response))
    if status in _RETRY or status >= 500:
        return Answer("retry", detail, retry_after=retry_after(response))
    return Answer("refused", detail)
