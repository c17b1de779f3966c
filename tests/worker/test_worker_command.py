"""`callvault worker` runs until SIGTERM/SIGINT and then stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_worker_stops_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env["CALLVAULT_DATA_DIR"] = str(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "callvault", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the embedded database is migrated and the worker logs that it started
        deadline = time.monotonic() + 20
        assert process.stderr is not None
        started = ""
        while "worker started" not in started:
            line = process.stderr.readline()
            assert line or process.poll() is None, started
            started += line
            assert time.monotonic() < deadline, started
        process.send_signal(signum)
        _, rest = process.communicate(timeout=20)
        assert process.returncode == 0, started + rest
        assert "worker stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
