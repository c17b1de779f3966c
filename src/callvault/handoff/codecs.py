"""RTP payload -> 16-bit mono PCM at the recording's rate, one decoder per stream.

G.711 (PCMU/PCMA) and L16 with the standard library's audioop (C, Python 3.11); G.722, Opus,
GSM and G.729 through FFmpeg (PyAV), whose decoders keep their state between packets as a
codec needs. Telephone events (DTMF) and comfort noise are not audio: `decoder_for` answers
None and the timeline leaves silence there. A codec with no decoder raises `UnusableCall`.
"""

from __future__ import annotations

from typing import Any, Protocol

from callvault.handoff.pcm import audioop
from callvault.handoff.sdp import Codec
from callvault.handoff.spoolmeta import UnusableCall

NOT_AUDIO = {"TELEPHONE-EVENT", "CN"}
# codec -> (FFmpeg decoder, the decoder's own sample rate)
_FFMPEG = {
    "G722": ("g722", 16000),
    "OPUS": ("libopus", 48000),
    "GSM": ("gsm", 8000),
    "G729": ("g729", 8000),
}
WIDEBAND = {"G722", "OPUS"}


class Decoder(Protocol):
    def decode(self, payload: bytes) -> bytes: ...


class _G711:
    def __init__(self, law: str, rate: int) -> None:
        self._to_linear = audioop.ulaw2lin if law == "PCMU" else audioop.alaw2lin
        self._rate = rate
        self._state: Any = None

    def decode(self, payload: bytes) -> bytes:
        pcm = self._to_linear(payload, 2)
        if self._rate != 8000:
            pcm, self._state = audioop.ratecv(pcm, 2, 1, 8000, self._rate, self._state)
        return pcm


class _L16:
    def __init__(self, clock_rate: int, rate: int) -> None:
        self._clock_rate = clock_rate
        self._rate = rate
        self._state: Any = None

    def decode(self, payload: bytes) -> bytes:
        pcm = audioop.byteswap(payload[: len(payload) & ~1], 2)  # network order -> native
        if self._rate != self._clock_rate:
            pcm, self._state = audioop.ratecv(pcm, 2, 1, self._clock_rate, self._rate, self._state)
        return pcm


class _Ffmpeg:
    def __init__(self, name: str, native_rate: int, rate: int) -> None:
        import av  # imported here: G.711 calls never load FFmpeg

        context: Any = av.CodecContext.create(name, "r")  # an AudioCodecContext
        context.sample_rate = native_rate
        context.layout = "mono"
        self._context = context
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._packet = av.Packet

    def decode(self, payload: bytes) -> bytes:
        out = bytearray()
        for frame in self._context.decode(self._packet(payload)):
            for converted in self._resampler.resample(frame):
                out += bytes(converted.planes[0])[: converted.samples * 2]
        return bytes(out)


def is_audio(codec: Codec) -> bool:
    return codec.name not in NOT_AUDIO


def output_rate(codecs: list[Codec]) -> int:
    """8 kHz for narrowband calls; 16 kHz as soon as a party speaks a wideband codec."""
    return (
        16000
        if any(c.name in WIDEBAND or c.clock_rate > 8000 for c in codecs if is_audio(c))
        else 8000
    )


def decoder_for(codec: Codec, rate: int) -> Decoder | None:
    """A fresh decoder producing `rate` Hz mono PCM, or None for events and comfort noise."""
    if not is_audio(codec):
        return None
    if codec.name in ("PCMU", "PCMA"):
        return _G711(codec.name, rate)
    if codec.name == "L16" and codec.channels == 1:
        return _L16(codec.clock_rate, rate)
    if codec.name in _FFMPEG:
        name, native = _FFMPEG[codec.name]
        try:
            return _Ffmpeg(name, native, rate)
        except Exception as exc:  # FFmpeg built without it
            raise UnusableCall(f"codec {codec.describe()} cannot be decoded: {exc}") from None
    raise UnusableCall(f"codec {codec.describe()} cannot be decoded (no decoder for it)")
