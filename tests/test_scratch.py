"""Temp files named after their process: a later process removes those of dead writers only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from callvault import scratch


def write_temp_file_and_die(directory: Path) -> Path:
    """A real process makes a temp file, then dies without cleaning up (os._exit: no finally)."""
    code = (
        "import os, sys; from pathlib import Path; from callvault.scratch import temp_path; "
        "p = temp_path(Path(sys.argv[1])); p.write_bytes(b'x'); print(p); os._exit(0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(directory)], capture_output=True, text=True, check=True
    )
    return Path(done.stdout.strip())


def test_files_of_a_dead_process_are_reclaimed_and_live_ones_kept(tmp_path: Path) -> None:
    mine = scratch.temp_path(tmp_path)
    mine.write_bytes(b"in use")
    orphan = write_temp_file_and_die(tmp_path)
    assert orphan.exists() and orphan.parent == tmp_path
    assert scratch.reclaim(tmp_path) == 1
    assert not orphan.exists() and mine.exists()


def test_a_reused_pid_is_not_the_old_writer(tmp_path: Path) -> None:
    # our own pid, but another start time: the writer with that pid is gone
    host, pid, start = scratch.owner_tag().split("_")
    stale = tmp_path / f"{host}_{pid}_{int(start) + 1}_abc.part"
    stale.write_bytes(b"x")
    assert scratch.reclaim(tmp_path) == 1 and not stale.exists()


def test_other_hosts_and_untagged_files_are_left_alone(tmp_path: Path) -> None:
    dead_pid = write_temp_file_and_die(tmp_path).name.split("_")[1]
    others = [
        tmp_path / f"another-host_{dead_pid}_1_abc.part",  # may be alive over there
        tmp_path / "notes.txt",
        tmp_path / "a_b_c_d",
    ]
    for path in others:
        path.write_bytes(b"x")
    scratch.reclaim(tmp_path)
    assert all(path.exists() for path in others)
    assert scratch.reclaim(tmp_path / "missing") == 0


def test_the_first_temp_path_of_a_directory_reclaims_it(tmp_path: Path) -> None:
    directory = tmp_path / "incoming"
    directory.mkdir()
    orphan = write_temp_file_and_die(directory)
    fresh = scratch.temp_path(directory)
    assert not orphan.exists()
    assert fresh.name.startswith(scratch.owner_tag() + "_") and fresh.suffix == ".part"
