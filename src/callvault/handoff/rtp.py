"""RTP packets (RFC 3550), pure: the header fields the timeline needs, and timestamp unwrapping."""

from __future__ import annotations

from dataclasses import dataclass

WRAP = 1 << 32


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """The RTP packet in a UDP payload, or None for anything else (RTCP, STUN, garbage)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    second = data[1]
    if 192 <= second <= 223:
        return None  # RTCP (SR, RR, SDES, BYE, APP, feedback) multiplexed on the port
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if data[0] & 0x20 and end > offset:  # padding: the last byte says how much
        end -= data[-1]
    if end < offset:
        return None
    return RtpPacket(
        payload_type=second & 0x7F,
        marker=bool(second & 0x80),
        sequence=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        payload=data[offset:end],
    )


def unwrap(timestamp: int, reference: int) -> int:
    """`timestamp` (32 bits) as the extended value nearest to the extended `reference`:
    a wrap past 2^32, or a reordered packet from before one, lands on the right side."""
    candidate = (reference & ~(WRAP - 1)) | timestamp
    if candidate - reference > WRAP // 2:
        candidate -= WRAP
    elif reference - candidate > WRAP // 2:
        candidate += WRAP
    return candidate


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
) -> bytes:
    """An RTP packet without CSRCs or extension (for tests and the bench)."""
    return (
        bytes([0x80, (0x80 if marker else 0) | payload_type])
        + (sequence & 0xFFFF).to_bytes(2, "big")
        + (timestamp % WRAP).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )
