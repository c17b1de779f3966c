"""The generic spool for any media server: `NAME.wav` or `NAME.mp3` plus `NAME.json`.

The media server writes the audio first, then writes the JSON elsewhere (or under a dot name)
and renames it into DIR: a `NAME.json` in DIR means the pair is complete. The JSON holds the
ingest endpoint's metadata (docs/api.md); `format` defaults to the file's extension,
`channels` to the file's channel count, the times to the file's last write minus its duration;
without call ids the ids are derived from `sip_call_id`, else NAME (handoff/ids.py), so the
same pair posted twice is one recording.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from callvault.handoff.ids import call_ids
from callvault.handoff.runner import FAILED
from callvault.handoff.spoolmeta import UnusableCall
from callvault.recordings.cli import inspect_file


@dataclass
class WatchedFile:
    json_path: Path

    @property
    def name(self) -> str:
        return self.json_path.stem

    def _audio(self) -> Path | None:
        for suffix in (".wav", ".mp3"):
            candidate = self.json_path.with_suffix(suffix)
            if candidate.is_file():
                return candidate
        return None

    def prepare(self, work_dir: Path) -> tuple[Path, dict[str, Any]]:
        try:
            document = json.loads(self.json_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnusableCall(f"{self.json_path.name} is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise UnusableCall(f"{self.json_path.name} must hold a JSON object")
        audio = self._audio()
        if audio is None:
            raise UnusableCall(f"no {self.name}.wav or {self.name}.mp3 beside {self.name}.json")
        metadata: dict[str, Any] = dict(document)
        metadata.setdefault("format", audio.suffix[1:])
        times = ("recording_started_at", "recording_ended_at")
        if "channels" not in metadata or not all(k in metadata for k in times):
            info = inspect_file(audio)
            if info is None:
                raise UnusableCall(f"{audio.name} is not a WAV or MP3 file")
            metadata.setdefault("channels", "dual" if info.channels == 2 else "single")
            # without times: the file was finished when it was last written (stable, so a
            # second pass is the same recording)
            ended = datetime.fromtimestamp(audio.stat().st_mtime, UTC)
            started = ended - timedelta(milliseconds=info.duration_millis)
            metadata.setdefault("recording_ended_at", ended.isoformat())
            metadata.setdefault("recording_started_at", started.isoformat())
        ids = call_ids(str(metadata.get("sip_call_id") or self.name))
        metadata.setdefault("call_leg_id", ids.call_leg_id)
        metadata.setdefault("call_session_id", ids.call_session_id)
        metadata.setdefault("call_control_id", ids.call_control_id)
        return audio, metadata

    def files(self) -> list[Path]:
        audio = self._audio()
        return [self.json_path, *([audio] if audio is not None else [])]

    def remove(self) -> None:
        for path in reversed(self.files()):
            path.unlink(missing_ok=True)


def scan_watch_dir(directory: Path) -> list[WatchedFile]:
    found: list[tuple[float, str, Path]] = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if path.suffix != ".json" or path.name.startswith("."):
            continue
        try:
            found.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:
            continue
    return [WatchedFile(path) for _, _, path in sorted(found)]


def failed_dir(directory: Path) -> Path:
    return directory / FAILED
