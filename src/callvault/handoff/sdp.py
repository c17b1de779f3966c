"""The parts of an SDP body (RFC 4566) that tie RTP to a party and a codec. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from callvault.handoff.pcap import Address

# RFC 3551's static payload types that a media server may send without an rtpmap
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    13: ("CN", 8000, 1),
    18: ("G729", 8000, 1),
}


@dataclass(frozen=True)
class Codec:
    name: str  # upper case: PCMU, PCMA, G722, OPUS, TELEPHONE-EVENT, CN, ...
    clock_rate: int
    channels: int = 1

    def describe(self) -> str:
        return f"{self.name}/{self.clock_rate}"


@dataclass
class SessionDescription:
    origin: str = ""  # o= username + session id: stays the same across one party's re-offers
    addresses: set[Address] = field(default_factory=set)  # where this party receives RTP
    codecs: dict[int, Codec] = field(default_factory=dict)  # payload type -> codec
    ssrcs: set[int] = field(default_factory=set)  # a=ssrc: what this party sends


def parse_sdp(text: str) -> SessionDescription:
    description = SessionDescription()
    session_host = ""
    media_host = ""
    audio = False
    port = 0
    payload_types: list[int] = []
    rtpmaps: dict[int, Codec] = {}

    def close_media() -> None:
        if audio and port:
            description.addresses.add((media_host or session_host, port))
            for payload_type in payload_types:
                codec = rtpmaps.get(payload_type)
                if codec is None and payload_type in STATIC_PAYLOAD_TYPES:
                    codec = Codec(*STATIC_PAYLOAD_TYPES[payload_type])
                if codec is not None:
                    description.codecs[payload_type] = codec

    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "o":
            parts = value.split()
            description.origin = " ".join(parts[:2])
        elif kind == "c":
            parts = value.split()
            host = parts[2].split("/")[0] if len(parts) >= 3 else ""
            if audio or port:
                media_host = host
            else:
                session_host = host
        elif kind == "m":
            close_media()
            parts = value.split()
            audio = bool(parts) and parts[0] == "audio"
            media_host = ""
            rtpmaps = {}
            try:
                port = int(parts[1].split("/")[0]) if audio else 0
                payload_types = [int(p) for p in parts[3:] if p.isdigit()] if audio else []
            except (IndexError, ValueError):
                port, payload_types = 0, []
        elif kind == "a" and audio:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                _parse_rtpmap(rest, rtpmaps)
            elif name == "ssrc":
                ssrc = rest.split(" ", 1)[0]
                if ssrc.isdigit():
                    description.ssrcs.add(int(ssrc))
    close_media()
    return description


def _parse_rtpmap(rest: str, into: dict[int, Codec]) -> None:
    number, _, encoding = rest.strip().partition(" ")
    pieces = encoding.strip().split("/")
    try:
        payload_type = int(number)
        clock_rate = int(pieces[1])
        channels = int(pieces[2]) if len(pieces) > 2 and pieces[2] else 1
    except (IndexError, ValueError):
        return
    into[payload_type] = Codec(pieces[0].upper(), clock_rate, channels)
