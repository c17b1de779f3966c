"""Temp files that a crash does not leak: each is named after the process that writes it, and
any later process on the same host removes those whose writer is gone.

A kill -9 skips every `finally`, so the temp files of that moment (an upload being received in
`{data_dir}/incoming/`, a default-store copy being staged in `{data_dir}/staging/`, a durable
put in the local store's `.callvault-tmp/`) stay behind. Their names start with the writer's
tag `{host}_{pid}_{start}_`: `reclaim(dir)` deletes the files of writers that no longer run
on this host (the pid is gone, or now belongs to a process that started at another time — pids
are reused). Files of other hosts (a data dir on a shared volume, other containers: their own
hostname) are never touched, nor files whose name has no tag.

Liveness comes from `/proc/{pid}/stat` (field 22, the start time in clock ticks since boot), so a
reused pid never counts as the old writer; without /proc, `kill(pid, 0)` is the fallback.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from pathlib import Path

_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_reclaimed: set[Path] = set()
_lock = threading.Lock()


def _start_ticks(pid: int) -> str | None:
    """The process's start time from /proc ("0" without /proc); None when it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # /proc works and has no such pid
        return "0" if _running_without_proc(pid) else None
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19]  # field 22 of the whole line


def _running_without_proc(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def host_tag() -> str:
    return _HOST_UNSAFE.sub("-", socket.gethostname()) or "host"


_owner: tuple[int, str] | None = None  # (pid, tag) of the last computation


def owner_tag() -> str:
    """`{host}_{pid}_{start}`: who writes a temp file (kept per pid: a fork changes it; worked
    out once per process because it reads /proc, and ingest names a temp file per request)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"{host_tag()}_{pid}_{_start_ticks(pid) or '0'}")
    return _owner[1]


def temp_path(directory: Path, suffix: str = ".part") -> Path:
    """A fresh temp file name in `directory` (created, mode 0700, if missing), tagged with this
    process; the first call for a directory reclaims what dead writers left there."""
    directory = Path(directory)
    with _lock:
        first = directory not in _reclaimed
        _reclaimed.add(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if first:
        reclaim(directory)
    return directory / f"{owner_tag()}_{uuid.uuid4().hex}{suffix}"


def reclaim(directory: Path) -> int:
    """Delete the temp files in `directory` whose writer (on this host) does not run anymore;
    returns how many. A missing directory is fine."""
    host = host_tag()
    alive: dict[tuple[str, str], bool] = {}
    removed = 0
    try:
        entries = list(Path(directory).iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        parts = entry.name.split("_", 3)
        if len(parts) != 4 or parts[0] != host or not parts[1].isdigit():
            continue  # not ours to judge: another host's, or not a tagged temp file
        writer = (parts[1], parts[2])
        if writer not in alive:
            alive[writer] = _start_ticks(int(parts[1])) == parts[2]
        if alive[writer] or not entry.is_file():
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed
