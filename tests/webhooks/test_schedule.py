"""The retry schedule table (pure)."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from callvault.config import load_settings
from callvault.webhooks.schedule import (
    DEFAULT_SCHEDULE,
    max_attempts,
    next_delay,
    parse_schedule,
    schedule_from_env,
)


def test_default_table_with_jitter() -> None:
    rng = random.Random(7)
    assert DEFAULT_SCHEDULE == (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
    for attempt, base in enumerate(DEFAULT_SCHEDULE, start=1):
        for _ in range(50):
            delay = next_delay(attempt, rng)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2
    assert next_delay(len(DEFAULT_SCHEDULE) + 1, rng) is None
    assert max_attempts() == 10


def test_jitter_spreads_delays() -> None:
    rng = random.Random(1)
    delays = {round(next_delay(1, rng) or 0, 3) for _ in range(20)}
    assert len(delays) > 10


def test_custom_schedule() -> None:
    schedule = parse_schedule("0.2, 0.5,1")
    assert schedule == (0.2, 0.5, 1.0)
    rng = random.Random(0)
    assert next_delay(3, rng, schedule) is not None
    assert next_delay(4, rng, schedule) is None
    for bad in ("", "a,b", "-1"):
        with pytest.raises(ValueError):
            parse_schedule(bad)
    with pytest.raises(ValueError):
        next_delay(0, rng)


def test_schedule_from_the_environment(tmp_path: Path) -> None:
    base = {
        "CALLVAULT_DATA_DIR": str(tmp_path),
        "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(bytes(32)).decode(),
        "CALLVAULT_INGEST_TOKEN": "t",
    }
    assert schedule_from_env(load_settings(base).environ) is None
    with_knob = load_settings({**base, "CALLVAULT_WEBHOOK_SCHEDULE": "0.2,0.5"})
    assert schedule_from_env(with_knob.environ) == (0.2, 0.5)
