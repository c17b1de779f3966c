"""One rtpengine call (metadata file + pcap) -> a recording file and its ingest metadata.

Two passes over the pcap, both streaming: a short look at the first packets picks the output
rate (8 kHz, or 16 kHz when a party speaks a wideband codec), then the whole file goes through
the timeline into the encoder. Anything that makes the call unusable raises `UnusableCall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from callvault.handoff import codecs
from callvault.handoff.encode import open_writer
from callvault.handoff.ids import call_ids
from callvault.handoff.pcap import Address, Datagram, PcapError, ReadStats, read_datagrams
from callvault.handoff.rtp import RtpPacket, parse_rtp
from callvault.handoff.sdp import STATIC_PAYLOAD_TYPES, Codec, SessionDescription
from callvault.handoff.spoolmeta import (
    CallSettings,
    SpoolMetadata,
    UnusableCall,
    parse_settings,
    parse_spool_metadata,
)
from callvault.handoff.timeline import CALLEE, CALLER, Timeline, TimelineStats, mix_dual, mix_single

log = structlog.get_logger("callvault.handoff")
PRESCAN_PACKETS = 400
META_PREFIX = "rtpengine-meta-"


class Parties:
    """Which party sent an RTP packet, from the SDPs in the metadata: the first offer is the
    caller's (it sent the INVITE), the first answer the callee's; later SDPs (re-INVITEs) join
    the party whose `o=` origin they carry. rtpengine's pcap holds the packets it relayed, each
    addressed to the party that hears it; a packet from a party's address, or with an SSRC its
    SDP announced, is that party's."""

    def __init__(self, meta: SpoolMetadata) -> None:
        self.sdps: tuple[list[SessionDescription], list[SessionDescription]] = ([], [])
        origins: dict[str, int] = {}
        if meta.offers:
            origins[meta.offers[0].origin] = CALLER
        if meta.answers:
            origins.setdefault(meta.answers[0].origin, CALLEE)
        for description in [*meta.offers, *meta.answers]:
            party = origins.get(description.origin)
            if party is not None:
                self.sdps[party].append(description)
        self.addresses: dict[Address, int] = {}
        self.ssrcs: dict[int, int] = {}
        for party in (CALLER, CALLEE):
            for description in self.sdps[party]:
                for address in description.addresses:
                    self.addresses.setdefault(address, party)
                for ssrc in description.ssrcs:
                    self.ssrcs.setdefault(ssrc, party)
        self._flows: dict[tuple[Address, Address, int], int | None] = {}

    def sender(self, datagram: Datagram, ssrc: int) -> int | None:
        flow = (datagram.src, datagram.dst, ssrc)
        if flow in self._flows:
            return self._flows[flow]
        party: int | None = None
        if (hearer := self.addresses.get(datagram.dst)) is not None:
            party = 1 - hearer
        elif (speaker := self.addresses.get(datagram.src)) is not None:
            party = speaker
        else:
            party = self.ssrcs.get(ssrc)
        self._flows[flow] = party
        return party

    def codec(self, sender: int, payload_type: int) -> Codec | None:
        """A payload type is numbered as the hearer's SDP declared it, else the sender's."""
        for party in (1 - sender, sender):
            for description in self.sdps[party]:
                if payload_type in description.codecs:
                    return description.codecs[payload_type]
        if payload_type in STATIC_PAYLOAD_TYPES:
            return Codec(*STATIC_PAYLOAD_TYPES[payload_type])
        return None


@dataclass
class Converted:
    audio: Path
    metadata: dict[str, Any]  # the ingest endpoint's metadata part
    samples: int
    rate: int
    stats: TimelineStats
    truncated: bool = False
    unknown_payload_types: set[int] = field(default_factory=set)


def call_key(metadata_path: Path, settings: CallSettings) -> str:
    if settings.sip_call_id:
        return settings.sip_call_id
    name = metadata_path.stem
    return name[len(META_PREFIX) :] if name.startswith(META_PREFIX) else name


def locate_pcap(meta: SpoolMetadata, metadata_path: Path) -> Path:
    """The pcap the metadata names; if the spool was moved, the same name in its pcaps/."""
    named = Path(meta.pcap_path)
    if named.is_file():
        return named
    beside = metadata_path.parent.parent / "pcaps" / named.name
    if beside.is_file():
        return beside
    raise UnusableCall(f"the pcap {meta.pcap_path} is missing")


def read_call(metadata_path: Path) -> tuple[SpoolMetadata, CallSettings, Path]:
    try:
        text = metadata_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise
    meta = parse_spool_metadata(text)
    settings = parse_settings(meta.settings_text)
    return meta, settings, locate_pcap(meta, metadata_path)


def _packets(pcap: Path, stats: ReadStats) -> Any:
    with pcap.open("rb", buffering=1 << 20) as handle:
        try:
            for datagram in read_datagrams(handle, stats):
                packet = parse_rtp(datagram.payload)
                if packet is not None:
                    yield datagram, packet
        except PcapError as exc:
            raise UnusableCall(f"{pcap.name}: {exc}") from None


def _choose_rate(pcap: Path, parties: Parties) -> int:
    used: list[Codec] = []
    for count, (datagram, packet) in enumerate(_packets(pcap, ReadStats())):
        if count >= PRESCAN_PACKETS:
            break
        sender = parties.sender(datagram, packet.ssrc)
        codec = parties.codec(sender, packet.payload_type) if sender is not None else None
        if codec is not None:
            used.append(codec)
    return codecs.output_rate(used)


def _decode_packets(
    pcap: Path, parties: Parties, timeline: Timeline, rate: int, read_stats: ReadStats
) -> tuple[int, set[int]]:
    """Every packet of the parties onto the timeline: the last packet's length at the output
    rate, and the payload types no SDP names."""
    unknown: set[int] = set()
    last_samples = 0
    for datagram, packet in _packets(pcap, read_stats):
        sender = parties.sender(datagram, packet.ssrc)
        if sender is None:
            continue
        codec = parties.codec(sender, packet.payload_type)
        if codec is None:
            unknown.add(packet.payload_type)
            continue
        if not codecs.is_audio(codec):
            timeline.note(datagram.time_us)
            timeline.stats.not_audio += 1
            continue
        timeline.add(
            sender,
            datagram.time_us,
            packet,
            codec.clock_rate,
            partial(codecs.decoder_for, codec, rate),
        )
        last_samples = _packet_samples(packet, codec, rate)
    return last_samples, unknown


def _refuse_silent_call(stats: TimelineStats, unknown: set[int]) -> None:
    """Says why no audio was placed on the timeline."""
    if unknown:
        types = ", ".join(str(t) for t in sorted(unknown))
        raise UnusableCall(f"no decodable audio: payload type(s) {types} not in the call's SDP")
    if stats.undecodable:
        count = stats.undecodable
        raise UnusableCall(f"the audio could not be decoded ({count} damaged packets)")
    raise UnusableCall("no RTP audio of the call's parties in the pcap")


def _ingest_metadata(
    metadata_path: Path, settings: CallSettings, first_us: int, samples: int, rate: int
) -> dict[str, Any]:
    started = datetime.fromtimestamp(first_us / 1_000_000, UTC)
    ended = datetime.fromtimestamp((first_us + samples * 1_000_000 // rate) / 1_000_000, UTC)
    ids = call_ids(call_key(metadata_path, settings))
    metadata: dict[str, Any] = {
        "connection_id": settings.connection_id,
        "call_control_id": ids.call_control_id,
        "call_leg_id": ids.call_leg_id,
        "call_session_id": ids.call_session_id,
        "format": settings.format,
        "channels": settings.channels,
        "recording_started_at": started.isoformat(),
        "recording_ended_at": ended.isoformat(),
    }
    optional = {
        "from": settings.from_,
        "to": settings.to,
        "sip_call_id": settings.sip_call_id,
        "client_state": settings.client_state,
        "custom_file_name": settings.custom_file_name,
    }
    metadata.update({key: value for key, value in optional.items() if value is not None})
    return metadata


def convert_call(metadata_path: Path, work_dir: Path) -> Converted:
    """Decode the call into `work_dir/<name>.<format>`; the caller removes the file."""
    meta, settings, pcap = read_call(metadata_path)
    parties = Parties(meta)
    if not parties.sdps[CALLER] and not parties.sdps[CALLEE]:
        raise UnusableCall("the metadata file holds no SDP: the parties cannot be told apart")
    rate = _choose_rate(pcap, parties)
    channels = 2 if settings.channels == "dual" else 1
    mix = mix_dual if channels == 2 else mix_single
    audio = work_dir / f"{metadata_path.stem}.{settings.format}"
    writer = open_writer(audio, settings.format, rate, channels)
    timeline = Timeline(rate, lambda caller, callee: writer.write(mix(caller, callee)))
    read_stats = ReadStats()
    try:
        last_samples, unknown = _decode_packets(pcap, parties, timeline, rate, read_stats)
        samples = timeline.finish(last_samples)
    finally:
        writer.close()
    if timeline.stats.placed == 0:
        audio.unlink(missing_ok=True)
        _refuse_silent_call(timeline.stats, unknown)
    assert timeline.first_us is not None
    return Converted(
        audio=audio,
        metadata=_ingest_metadata(metadata_path, settings, timeline.first_us, samples, rate),
        samples=samples,
        rate=rate,
        stats=timeline.stats,
        truncated=read_stats.truncated,
        unknown_payload_types=unknown,
    )


def _packet_samples(packet: RtpPacket, codec: Codec, rate: int) -> int:
    """One packet's length at the output rate (for the recording's tail)."""
    if codec.name in ("PCMU", "PCMA"):
        return len(packet.payload) * rate // 8000
    return rate // 50  # 20 ms, the usual packet time of the other codecs
