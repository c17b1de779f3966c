"""Crafted rtpengine spools: a call's metadata file and its pcap, packet by packet, as
rtpengine 10.5 writes them (LINKTYPE_RAW, the packets it relays, each addressed to the party
that hears it). Also the audio measures the tests use (a tone's power in a channel)."""

from __future__ import annotations

import math
import struct
import wave
from dataclasses import dataclass, field
from pathlib import Path

from callvault.handoff import pcap
from callvault.handoff.pcm import audioop
from callvault.handoff.rtp import build_rtp

CALLER_ADDR = ("127.0.0.1", 30000)
CALLEE_ADDR = ("127.0.0.1", 30012)
RELAY_TO_CALLER = ("127.0.0.1", 30036)  # rtpengine's port facing the caller
RELAY_TO_CALLEE = ("127.0.0.1", 30014)
T0_US = 1_796_529_447_505_954  # 2026-12-06T03:57:27.505954Z
CALLER, CALLEE = 0, 1


def tone(frequency: float, samples: int, start: int = 0, rate: int = 8000) -> bytes:
    """16-bit mono PCM; `start` is the first sample's index, so pieces join without a click."""
    return b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * frequency * (start + i) / rate)))
        for i in range(samples)
    )


@dataclass
class Record:
    time_us: int
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass
class CraftedCall:
    offer_codecs: str = "0 101"
    rtpmaps: tuple[str, ...] = ("0 PCMU/8000", "101 telephone-event/8000")
    records: list[Record] = field(default_factory=list)
    settings: str = "connection_id=conn-1|format=wav|channels=dual|sip_call_id=call-1@127.0.0.1"

    def send(self, party: int, time_us: int, rtp: bytes) -> None:
        if party == CALLER:  # the caller's audio, relayed to the callee
            self.records.append(Record(time_us, RELAY_TO_CALLEE, CALLEE_ADDR, rtp))
        else:
            self.records.append(Record(time_us, RELAY_TO_CALLER, CALLER_ADDR, rtp))

    def talk(
        self,
        party: int,
        frequency: float,
        seconds: float,
        *,
        start_s: float = 0.0,
        ssrc: int = 1111,
        ts0: int = 0,
        seq0: int = 0,
        payload_type: int = 0,
        skip: range | None = None,
    ) -> None:
        """20 ms G.711 packets of a tone, captured every 20 ms from `start_s` on."""
        encode = audioop.lin2ulaw if payload_type == 0 else audioop.lin2alaw
        for n in range(round(seconds * 50)):
            if skip is not None and n in skip:
                continue
            first = round(start_s * 8000) + n * 160
            payload = encode(tone(frequency, 160, first), 2)
            rtp = build_rtp(payload_type, seq0 + n, ts0 + n * 160, ssrc, payload)
            self.send(party, T0_US + round(start_s * 1e6) + n * 20_000, rtp)

    def sdp(self, address: tuple[str, int], user: str, ssrc: int | None, origin: str) -> str:
        lines = [
            "v=0",
            f"o=- {origin} 1 IN IP4 {address[0]}",
            "s=-",
            f"c=IN IP4 {address[0]}",
            "t=0 0",
            f"m=audio {address[1]} RTP/AVP {self.offer_codecs}",
        ]
        if ssrc is not None:
            lines.append(f"a=ssrc:{ssrc} cname:sip:{user}@127.0.0.1")
        lines += [f"a=rtpmap:{m}" for m in self.rtpmaps]
        lines += ["a=sendrecv", "a=ptime:20"]
        return "\n".join(lines)

    def write(
        self, spool: Path, name: str = "call1-0123456789abcdef", *, order: bool = True
    ) -> Path:
        """The pcap in `spool/pcaps/`, the metadata file in `spool/metadata/`; its path."""
        (spool / "pcaps").mkdir(parents=True, exist_ok=True)
        (spool / "metadata").mkdir(parents=True, exist_ok=True)
        pcap_path = spool / "pcaps" / f"{name}.pcap"
        records = sorted(self.records, key=lambda r: r.time_us) if order else self.records
        with pcap_path.open("wb") as handle:
            pcap.write_header(handle)
            for record in records:
                body = pcap.raw_ipv4_udp(record.src, record.dst, record.payload)
                pcap.write_record(handle, record.time_us, body)
        text = "\n".join(
            [
                str(pcap_path),
                "",
                "",
                "Timestamp started ms: 1796529447488.031",
                "SDP mode: offer",
                "SDP before RTP packet: 1",
                "",
                self.sdp(CALLER_ADDR, "a", None, "100"),
                "",
                "Timestamp started ms: 1796529447488.037",
                "SDP mode: answer",
                "SDP before RTP packet: 2",
                "",
                self.sdp(CALLEE_ADDR, "b", None, "200"),
                "",
                "Timestamp terminated ms(first monologue): 1796529451535.132",
                "",
                "call start time: 2026-12-06T03:57:27",
                "call end time: 2026-12-06T03:57:31",
                "",
                "",
                self.settings,
                "",
            ]
        )
        meta = spool / "metadata" / f"rtpengine-meta-{name}.txt"
        meta.write_text(text)
        return meta


def read_wav(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getframerate(), w.readframes(w.getnframes())


def channel(frames: bytes, channels: int, which: int) -> bytes:
    if channels == 1:
        return frames
    return audioop.tomono(frames, 2, 1, 0) if which == 0 else audioop.tomono(frames, 2, 0, 1)


def power(pcm: bytes, frequency: float, rate: int = 8000) -> float:
    """The Goertzel power of `frequency` in 16-bit mono PCM, per sample."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    if not samples:
        return 0.0
    k = 2 * math.cos(2 * math.pi * frequency / rate)
    a = b = 0.0
    for value in samples:
        a, b = value + k * a - b, a
    return (a * a + b * b - k * a * b) / len(samples)


def rms(pcm: bytes) -> int:
    return audioop.rms(pcm, 2) if pcm else 0
