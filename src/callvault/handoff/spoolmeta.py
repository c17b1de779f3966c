"""rtpengine's per-call metadata file (`--recording-method=pcap`) and the call's settings. Pure.

The file: the pcap's path on the first line; per SDP seen, `SDP mode: offer|answer` and the
body; near the end `call start time` / `call end time`; last, the string the proxy passed with
the `metadata=` flag: `key=value` pairs joined by `|` (docs/media-servers.md lists the keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from callvault.handoff.sdp import SessionDescription, parse_sdp

SETTING_KEYS = (
    "connection_id",
    "from",
    "to",
    "sip_call_id",
    "client_state",
    "custom_file_name",
    "format",
    "channels",
)
_HEADER = re.compile(
    r"^(Timestamp started ms|Timestamp terminated ms.*|SDP mode|SDP before RTP packet"
    r"|call start time|call end time)\s*:"
)


class UnusableCall(ValueError):
    """The call cannot become a recording; `str()` is the reason (written to failed/)."""


@dataclass(frozen=True)
class CallSettings:
    connection_id: str
    format: Literal["wav", "mp3"] = "wav"
    channels: Literal["single", "dual"] = "single"
    from_: str | None = None
    to: str | None = None
    sip_call_id: str | None = None
    client_state: str | None = None
    custom_file_name: str | None = None


@dataclass
class SpoolMetadata:
    pcap_path: str
    offers: list[SessionDescription] = field(default_factory=list)
    answers: list[SessionDescription] = field(default_factory=list)
    settings_text: str = ""


def parse_settings(text: str) -> CallSettings:
    """`key=value|key=value…` (unknown keys ignored, so a proxy may pass its own)."""
    values: dict[str, str] = {}
    for pair in text.strip().split("|"):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if sep and key in SETTING_KEYS and value.strip():
            values[key] = value.strip()
    connection_id = values.get("connection_id")
    if not connection_id:
        raise UnusableCall("no connection_id in the call's metadata (rtpengine metadata= flag)")
    format = values.get("format", "wav").lower()
    if format not in ("wav", "mp3"):
        raise UnusableCall(f"format must be wav or mp3, not {format!r}")
    channels = values.get("channels", "single").lower()
    if channels not in ("single", "dual"):
        raise UnusableCall(f"channels must be single or dual, not {channels!r}")
    return CallSettings(
        connection_id=connection_id,
        format=format,  # type: ignore[arg-type]
        channels=channels,  # type: ignore[arg-type]
        from_=values.get("from"),
        to=values.get("to"),
        sip_call_id=values.get("sip_call_id"),
        client_state=values.get("client_state"),
        custom_file_name=values.get("custom_file_name"),
    )


def parse_spool_metadata(text: str) -> SpoolMetadata:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UnusableCall("the metadata file is empty (no pcap path on its first line)")
    meta = SpoolMetadata(pcap_path=lines[0].strip())
    mode: str | None = None
    body: list[str] = []
    last_text = ""

    def close_sdp() -> None:
        if mode is not None and body:
            description = parse_sdp("\n".join(body))
            (meta.offers if mode == "offer" else meta.answers).append(description)

    for line in lines[1:]:
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if header:
            if header.group(1) == "SDP mode":
                close_sdp()
                mode = stripped.split(":", 1)[1].strip().lower()
                body = []
            elif header.group(1).startswith(("Timestamp terminated", "call ")):
                close_sdp()
                mode, body = None, []
            continue
        if mode is not None and len(stripped) > 1 and stripped[1] == "=":
            body.append(stripped)
        elif stripped:
            last_text = stripped
    close_sdp()
    # the proxy's string is the last line that is neither a header nor SDP
    meta.settings_text = last_text if "=" in last_text else ""
    return meta
