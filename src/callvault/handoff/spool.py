"""rtpengine's pcap recording spool (`--recording-dir=DIR --recording-method=pcap`).

rtpengine writes `DIR/pcaps/<call>.pcap` while the call runs and, when the call is deleted,
renames `DIR/metadata/rtpengine-meta-<call>.txt` in from `DIR/tmp/`: a metadata file in
`metadata/` is a finished call. Calls are taken oldest first (the metadata file's mtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callvault.handoff.convert import convert_call, read_call
from callvault.handoff.runner import FAILED

SUFFIX = ".txt"


@dataclass
class RtpengineCall:
    metadata_path: Path

    @property
    def name(self) -> str:
        return self.metadata_path.stem

    def prepare(self, work_dir: Path) -> tuple[Path, dict[str, Any]]:
        converted = convert_call(self.metadata_path, work_dir)
        return converted.audio, converted.metadata

    def _pcap(self) -> Path | None:
        try:
            return read_call(self.metadata_path)[2]
        except Exception:
            return None

    def files(self) -> list[Path]:
        pcap = self._pcap()
        if pcap is None:  # unreadable metadata: the pcap named after the call, if any
            stem = self.name.removeprefix("rtpengine-meta-")
            candidate = self.metadata_path.parent.parent / "pcaps" / f"{stem}.pcap"
            pcap = candidate if candidate.exists() else None
        return [self.metadata_path, *([pcap] if pcap is not None else [])]

    def remove(self) -> None:
        # the metadata file first: killed in between, a pcap is left alone (an orphan, its
        # call stored); the other order would leave a metadata file without its pcap, which
        # the next run would park in failed/
        for path in self.files():
            path.unlink(missing_ok=True)


def scan_spool(spool_dir: Path) -> list[RtpengineCall]:
    metadata_dir = spool_dir / "metadata"
    found: list[tuple[float, str, Path]] = []
    try:
        entries = list(metadata_dir.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if path.suffix != SUFFIX or path.name.startswith("."):
            continue
        try:
            found.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:
            continue
    return [RtpengineCall(path) for _, _, path in sorted(found)]


def failed_dir(spool_dir: Path) -> Path:
    return spool_dir / FAILED
