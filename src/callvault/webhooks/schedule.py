"""When a failed webhook delivery is tried again: a schedule table, not an ad-hoc loop.

The first delivery goes out at once; after the n-th failed round the next one waits
`schedule[n - 1]` seconds (±20 % jitter, so that a receiver that comes back is not hit by every
event at the same instant). When the table runs out, the event has failed for good.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

# 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h, 12 h: about 23 h of retries in all
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200)
JITTER = 0.2


def jittered(seconds: float, rng: random.Random, jitter: float = JITTER) -> float:
    return seconds * (1 + rng.uniform(-jitter, jitter))


def next_delay(
    attempt: int, rng: random.Random, schedule: tuple[float, ...] = DEFAULT_SCHEDULE
) -> float | None:
    """Seconds to wait after failed round `attempt` (1-based); None when there is no next one."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if attempt > len(schedule):
        return None
    return jittered(schedule[attempt - 1], rng)


def max_attempts(schedule: tuple[float, ...] = DEFAULT_SCHEDULE) -> int:
    """Delivery rounds in all: the first one plus one per schedule entry."""
    return len(schedule) + 1


def parse_schedule(text: str) -> tuple[float, ...]:
    """`"0.2,0.5,1"` → (0.2, 0.5, 1.0); the env knob that makes retries fast in tests."""
    delays = tuple(float(part) for part in text.split(",") if part.strip())
    if not delays or any(delay < 0 for delay in delays):
        raise ValueError(f"a webhook schedule is a comma-separated list of seconds: {text!r}")
    return delays


def schedule_from_env(environ: Mapping[str, str]) -> tuple[float, ...] | None:
    """CALLVAULT_WEBHOOK_SCHEDULE parsed (None when unset: DEFAULT_SCHEDULE applies)."""
    raw = environ.get("CALLVAULT_WEBHOOK_SCHEDULE", "")
    return parse_schedule(raw) if raw else None
