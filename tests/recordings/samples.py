"""Small generated audio for the recordings tests: WAVs from the stdlib `wave` module, MP3
frames built by hand from the header bits (silence payload: the header is what gets checked)."""

from __future__ import annotations

import io
import math
import struct
import wave

VERSION_BITS = {"1": 0b11, "2": 0b10, "2.5": 0b00}
LAYER_BITS = {1: 0b11, 2: 0b10, 3: 0b01}
MONO, STEREO, JOINT, DUAL = 3, 0, 1, 2


def make_wav(
    seconds: float = 0.5, channels: int = 1, rate: int = 8000, sample_width: int = 2
) -> bytes:
    frames = int(seconds * rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(sample_width)
        wav.setframerate(rate)
        samples = bytearray()
        for i in range(frames):
            value = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
            samples += struct.pack("<h", value)[:sample_width] * channels
        wav.writeframes(bytes(samples))
    return out.getvalue()


def frame_header(
    version: str = "1",
    layer: int = 3,
    bitrate_index: int = 9,  # 128 kbps for MPEG-1 layer III
    rate_index: int = 0,  # 44100 Hz for MPEG-1
    padding: bool = False,
    mode: int = MONO,
) -> bytes:
    b1 = 0xE0 | VERSION_BITS[version] << 3 | LAYER_BITS[layer] << 1 | 1  # 1: no CRC
    b2 = bitrate_index << 4 | rate_index << 2 | int(padding) << 1
    b3 = mode << 6
    return bytes([0xFF, b1, b2, b3])


def frame_length(header: bytes) -> int:
    from callvault.recordings.audio import parse_frame_header

    parsed = parse_frame_header(header)
    assert parsed is not None
    return parsed.length


def mp3_frame(**kwargs: object) -> bytes:
    header = frame_header(**kwargs)  # type: ignore[arg-type]
    return header + bytes(frame_length(header) - 4)


def make_mp3(frames: int = 40, mode: int = MONO, id3: bool = False, **kwargs: object) -> bytes:
    body = b"".join(mp3_frame(mode=mode, padding=bool(i % 3 == 0), **kwargs) for i in range(frames))
    if id3:
        tag_body = b"TIT2" + struct.pack(">I", 6) + b"\x00\x00" + b"\x00hello"
        size = len(tag_body)
        synchsafe = bytes([size >> 21 & 0x7F, size >> 14 & 0x7F, size >> 7 & 0x7F, size & 0x7F])
        body = b"ID3\x04\x00\x00" + synchsafe + tag_body + body
    return body
