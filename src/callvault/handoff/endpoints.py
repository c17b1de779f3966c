"""`POST /internal/v1/rtpengine/recordings?token=TOKEN`: rtpengine >= 11.3's recording daemon
hands over a finished file (`--notify-uri=… --notify-post --notify-record`).

The request, as recording-daemon/notify.c builds it with libcurl: one multipart part named
`ngfile` holding the file (no filename, no content type) and the facts in headers:
`X-Recording-Call-ID`, `X-Recording-File-Format` (wav|mp3), `X-Recording-Kind` (mixed|single),
`X-Recording-Stream-Start-Time` / `-End-Time` (Unix seconds, 6 decimals), `X-Recording-Tag`
(single: the party), `X-Recording-Call-Metadata` (the proxy's `metadata=` string: the same
`key=value|…` settings as the pcap spool). The daemon sends no custom header, so the ingest
token comes in the query string, compared in constant time; nothing here logs it (uvicorn's
access log is off, error logs carry the path only).

The file then goes through ingest exactly as `POST /internal/v1/recordings` does (streamed to
disk, checked, durable before 202, idempotent): only where the metadata comes from differs.
Ids: as the spool's (handoff/ids.py), keyed by the SIP Call-ID (`sip_call_id` in the metadata,
else the daemon's call id, which is the SIP Call-ID the proxy passed); a `single` file (one
party's stream) adds its tag to the leg key. Channels come from the file itself.
"""

from __future__ import annotations

import hmac
import logging
import re
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from callvault.auth import get_runtime
from callvault.errors import ApiError, error_responses, invalid
from callvault.errors import unauthorized as unauthorized_error
from callvault.handoff.ids import call_ids
from callvault.handoff.spoolmeta import UnusableCall, parse_settings
from callvault.limits import RTPENGINE_INGEST_PATH
from callvault.recordings.endpoints import answer_ingest
from callvault.recordings.schemas import IngestMetadata, IngestResponse
from callvault.recordings.upload import (
    metadata_error,
)
from callvault.runtime import Runtime

router = APIRouter(tags=["ingest"])
_TOKEN_IN_QUERY = re.compile(r"(?i)([?&]token=)[^&\s\"]*")


class RedactQueryToken(logging.Filter):
    """Masks `token=…` in a logged request line (uvicorn's access log, when a deployment runs
    uvicorn with it on; `callvault serve` has it off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = _TOKEN_IN_QUERY.sub(r"\1***", record.msg)
        return True


_access_log = logging.getLogger("uvicorn.access")
if not any(isinstance(f, RedactQueryToken) for f in _access_log.filters):
    _access_log.addFilter(RedactQueryToken())


def unauthorized() -> ApiError:
    return unauthorized_error("Authentication failed: pass the ingest token as ?token=.")


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value.strip() if value is not None and value.strip() else None


def _time(request: Request, name: str) -> datetime:
    value = _header(request, name)
    try:
        return datetime.fromtimestamp(float(value or ""), UTC)
    except (ValueError, OverflowError, OSError):
        raise invalid(f"{name} must be Unix seconds, not {value!r}.", parameter=name) from None


def metadata_from_headers(request: Request) -> IngestMetadata:
    """The ingest metadata an rtpengine notification's headers carry (pure but for reading)."""
    try:
        settings = parse_settings(_header(request, "X-Recording-Call-Metadata") or "")
    except UnusableCall as exc:
        raise invalid(
            f"X-Recording-Call-Metadata: {exc}.", parameter="X-Recording-Call-Metadata"
        ) from None
    file_format = (_header(request, "X-Recording-File-Format") or "").lower()
    if file_format not in ("wav", "mp3"):
        raise invalid(
            f"X-Recording-File-Format must be wav or mp3, not {file_format!r} "
            "(rtpengine-recording --output-format).",
            parameter="X-Recording-File-Format",
        )
    call_id = _header(request, "X-Recording-Call-ID")
    key = settings.sip_call_id or call_id
    if not key:
        raise invalid("X-Recording-Call-ID is missing.", parameter="X-Recording-Call-ID")
    ids = call_ids(key)
    leg = ids.call_leg_id
    if (_header(request, "X-Recording-Kind") or "").lower() == "single":
        party = _header(request, "X-Recording-Tag") or _header(request, "X-Recording-File-Name")
        leg = call_ids(f"{key}|{party}").call_leg_id
    started = _time(request, "X-Recording-Stream-Start-Time")
    ended = _time(request, "X-Recording-Stream-End-Time")
    document = {
        "connection_id": settings.connection_id,
        "call_control_id": ids.call_control_id,
        "call_leg_id": leg,
        "call_session_id": ids.call_session_id,
        "format": file_format,
        "channels": settings.channels,  # replaced by the file's own layout
        "recording_started_at": started.isoformat(),
        "recording_ended_at": max(started, ended).isoformat(),
        "from": settings.from_,
        "to": settings.to,
        "sip_call_id": settings.sip_call_id or call_id,
        "client_state": settings.client_state,
        "custom_file_name": settings.custom_file_name,
    }
    try:
        return IngestMetadata.model_validate({k: v for k, v in document.items() if v is not None})
    except ValidationError as exc:
        raise metadata_error(exc) from None


@router.post(
    RTPENGINE_INGEST_PATH,
    status_code=202,
    response_model=IngestResponse,
    summary="rtpengine's recording daemon hands over a finished recording (--notify-record)",
    responses={
        200: {"model": IngestResponse, "description": "Already received: the same recording."},
        **error_responses(400, 401, 408, 413, 415, 422, 503, 507),
    },
)
async def rtpengine_recording(
    request: Request, token: str = "", runtime: Runtime = Depends(get_runtime)
) -> JSONResponse:
    expected = runtime.settings.ingest_token
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise unauthorized()
    return await answer_ingest(
        request,
        runtime,
        audio_part="ngfile",
        given_metadata=metadata_from_headers(request),
        channels_from_audio=True,
    )
