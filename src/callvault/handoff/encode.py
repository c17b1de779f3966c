"""Recording files from PCM windows: WAV (16-bit PCM) and MP3 (LAME, through FFmpeg/PyAV).

Both write as the windows come, so a long call never sits in memory; the WAV header's sizes are
patched when the file is closed.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Any, Protocol

MP3_KBPS_PER_CHANNEL = {8000: 24, 16000: 32}


class AudioWriter(Protocol):
    def write(self, pcm: bytes) -> None: ...

    def close(self) -> None: ...


class WavWriter:
    def __init__(self, path: Path, rate: int, channels: int) -> None:
        self._handle: IO[bytes] = path.open("wb")
        self._rate, self._channels = rate, channels
        self._size = 0
        self._handle.write(self._header(0))

    def _header(self, size: int) -> bytes:
        block = 2 * self._channels
        return (
            b"RIFF"
            + struct.pack("<I", 36 + size)
            + b"WAVEfmt "
            + struct.pack(
                "<IHHIIHH", 16, 1, self._channels, self._rate, self._rate * block, block, 16
            )
            + b"data"
            + struct.pack("<I", size)
        )

    def write(self, pcm: bytes) -> None:
        self._handle.write(pcm)
        self._size += len(pcm)

    def close(self) -> None:
        self._handle.seek(0)
        self._handle.write(self._header(self._size))
        self._handle.close()


class Mp3Writer:
    """LAME at a constant bitrate suited to telephone audio (24 kbit/s per channel at 8 kHz)."""

    def __init__(self, path: Path, rate: int, channels: int) -> None:
        import av  # FFmpeg is loaded only when an MP3 is asked for

        self._av: Any = av
        self._container: Any = av.open(str(path), "w", format="mp3")
        self._stream: Any = self._container.add_stream("libmp3lame", rate=rate)
        self._layout = "mono" if channels == 1 else "stereo"
        self._stream.layout = self._layout
        self._stream.bit_rate = MP3_KBPS_PER_CHANNEL.get(rate, 48) * 1000 * channels
        self._rate, self._channels = rate, channels
        self._pts = 0

    def write(self, pcm: bytes) -> None:
        samples = len(pcm) // (2 * self._channels)
        if samples == 0:
            return
        frame = self._av.AudioFrame(format="s16", layout=self._layout, samples=samples)
        frame.planes[0].update(pcm[: samples * 2 * self._channels])
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += samples
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


def open_writer(path: Path, format: str, rate: int, channels: int) -> AudioWriter:
    return WavWriter(path, rate, channels) if format == "wav" else Mp3Writer(path, rate, channels)
