"""Read a pcap file as a stream of UDP datagrams (pure, one record at a time).

rtpengine's pcap recording writes LINKTYPE_RAW (raw IPv4/IPv6, no link header); Ethernet and
Linux cooked captures are read too, so a capture made with tcpdump can be replayed. A record cut
short at the end of the file (a writer that died mid-record) ends the stream quietly: everything
before it is still good audio. A file that is not a pcap at all raises `PcapError`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1),  # little-endian, microseconds
    b"\xa1\xb2\xc3\xd4": (">", 1),
    b"\x4d\x3c\xb2\xa1": ("<", 1000),  # nanoseconds: divide by 1000
    b"\xa1\xb2\x3c\x4d": (">", 1000),
}
MAX_RECORD = 262144

Address = tuple[str, int]


class PcapError(ValueError):
    """The file cannot be read as a pcap; `str()` is the reason."""


@dataclass(frozen=True, slots=True)
class Datagram:
    time_us: int  # capture time, microseconds since the Unix epoch (UTC)
    src: Address
    dst: Address
    payload: bytes


@dataclass
class ReadStats:
    records: int = 0
    skipped: int = 0  # not UDP over IP
    truncated: bool = False  # the last record was cut short


def read_datagrams(handle: BinaryIO, stats: ReadStats | None = None) -> Iterator[Datagram]:
    """The UDP datagrams of the pcap in `handle`, in file order."""
    stats = stats if stats is not None else ReadStats()
    header = handle.read(24)
    if len(header) < 24 or header[:4] not in _MAGIC:
        raise PcapError("not a pcap file (no pcap header)")
    order, divisor = _MAGIC[header[:4]]
    (linktype,) = struct.unpack(order + "I", header[20:24])
    linktype &= 0x0FFFFFFF
    if linktype not in (
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    ):
        raise PcapError(f"pcap link type {linktype} is not supported")
    record = struct.Struct(order + "IIII")
    while True:
        head = handle.read(16)
        if not head:
            return
        if len(head) < 16:
            stats.truncated = True
            return
        seconds, fraction, captured, _original = record.unpack(head)
        if captured > MAX_RECORD:
            # garbage where a record header should be: what came before is still usable
            stats.truncated = True
            return
        data = handle.read(captured)
        if len(data) < captured:
            stats.truncated = True
            return
        stats.records += 1
        datagram = _udp(linktype, data, seconds * 1_000_000 + fraction // divisor)
        if datagram is None:
            stats.skipped += 1
            continue
        yield datagram


def _udp(linktype: int, data: bytes, time_us: int) -> Datagram | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        ethertype = int.from_bytes(data[12:14], "big")
        offset = 14
        if ethertype == 0x8100 and len(data) >= 18:  # one VLAN tag
            ethertype = int.from_bytes(data[16:18], "big")
            offset = 18
        if ethertype not in (0x0800, 0x86DD):
            return None
        data = data[offset:]
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16 or int.from_bytes(data[14:16], "big") not in (0x0800, 0x86DD):
            return None
        data = data[16:]
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        header_length = (data[0] & 0x0F) * 4
        if len(data) < header_length + 8 or data[9] != 17:
            return None
        if int.from_bytes(data[6:8], "big") & 0x3FFF:
            return None  # an IP fragment: RTP never needs them
        src_ip = socket.inet_ntoa(data[12:16])
        dst_ip = socket.inet_ntoa(data[16:20])
        udp = data[header_length:]
    elif version == 6:
        if len(data) < 48 or data[6] != 17:
            return None  # extension headers are not followed: RTP does not use them
        src_ip = socket.inet_ntop(socket.AF_INET6, data[8:24])
        dst_ip = socket.inet_ntop(socket.AF_INET6, data[24:40])
        udp = data[40:]
    else:
        return None
    src_port = int.from_bytes(udp[0:2], "big")
    dst_port = int.from_bytes(udp[2:4], "big")
    length = int.from_bytes(udp[4:6], "big")
    payload = udp[8:length] if 8 <= length <= len(udp) else udp[8:]
    return Datagram(time_us, (src_ip, src_port), (dst_ip, dst_port), payload)


def write_header(handle: BinaryIO, linktype: int = LINKTYPE_RAW) -> None:
    """A little-endian microsecond pcap header (for tests and the bench)."""
    handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))


def raw_ipv4_udp(src: Address, dst: Address, payload: bytes) -> bytes:
    """One LINKTYPE_RAW record body: IPv4 + UDP + payload, as rtpengine writes them."""
    udp = struct.pack(">HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src[0]).packed,
        ipaddress.IPv4Address(dst[0]).packed,
    )
    return ip + udp


def write_record(handle: BinaryIO, time_us: int, body: bytes) -> None:
    seconds, micros = divmod(time_us, 1_000_000)
    handle.write(struct.pack("<IIII", seconds, micros, len(body), len(body)) + body)
