"""Small WAVs whose bytes differ every time (random samples), so that a sha256 check proves
that an object holds its own recording and not another one's."""

from __future__ import annotations

import io
import os
import wave


def noise_wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(os.urandom(int(seconds * rate) * 2))
    return out.getvalue()
