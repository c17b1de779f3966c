"""Audio whose every slice is unique (random PCM), and a scan for it on disk."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

PROBE_BYTES = 32


def noisy_wav(seconds: float = 0.5, channels: int = 1, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(os.urandom(int(seconds * rate) * 2 * channels))
    return out.getvalue()


def probes(audio: bytes, count: int = 64) -> list[bytes]:
    """Slices of the audio's sample data (after the 44-byte header), spread over the file."""
    data = audio[44:]
    step = max(1, (len(data) - PROBE_BYTES) // count)
    return [data[i : i + PROBE_BYTES] for i in range(0, len(data) - PROBE_BYTES, step)][:count]


def files_holding(root: Path, audio: bytes) -> list[str]:
    """Every file under `root` that holds any piece of the audio's samples (skipping files
    that vanish while scanned: temp files come and go)."""
    pieces = probes(audio)
    found = []
    for path in root.rglob("*"):
        try:
            if not path.is_file():
                continue
            content = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        if any(piece in content for piece in pieces):
            found.append(str(path))
    return found
