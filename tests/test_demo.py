"""`callvault demo` end to end, as a user runs it: a subprocess that must exit 0."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_the_whole_flow() -> None:
    # the demo makes its own data dir and settings: nothing of the suite's environment leaks in
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    result = subprocess.run(
        [sys.executable, "-m", "callvault", "demo", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "signature verified" in out
    assert '"event_type": "call.recording.saved"' in out
    assert "matches" in out and out.rstrip().endswith("demo ok")


def test_demo_fails_clearly_on_timeout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    result = subprocess.run(
        [sys.executable, "-m", "callvault", "demo", "--timeout", "0.01"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 1
    assert "demo failed: callvault serve did not start before the timeout" in result.stdout
