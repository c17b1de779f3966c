"""The worker's timing settings (docs/scaling.md): lease, drain, upload backoff cap and the
give-up horizon, from the environment into the pure policy."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callvault.config import load_settings
from callvault.recordings import retry_policy as policy

ENV = {
    "CALLVAULT_ENCRYPTION_KEYS": "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=",
    "CALLVAULT_INGEST_TOKEN": "t",
}


def test_defaults_and_overrides(tmp_path: Path) -> None:
    defaults = load_settings({**ENV, "CALLVAULT_DATA_DIR": str(tmp_path)})
    assert (
        defaults.worker_lease_secs,
        defaults.worker_drain_secs,
        defaults.upload_backoff_cap_secs,
        defaults.upload_give_up_secs,
    ) == (60.0, 10.0, 300.0, 86400.0)
    tuned = load_settings(
        {
            **ENV,
            "CALLVAULT_DATA_DIR": str(tmp_path),
            "CALLVAULT_WORKER_LEASE_SECS": "6",
            "CALLVAULT_WORKER_DRAIN_SECS": "0.5",
            "CALLVAULT_UPLOAD_BACKOFF_CAP_SECS": "2",
            "CALLVAULT_UPLOAD_GIVE_UP_SECS": "1.5",
        }
    )
    assert (
        tuned.worker_lease_secs,
        tuned.worker_drain_secs,
        tuned.upload_backoff_cap_secs,
        tuned.upload_give_up_secs,
    ) == (6.0, 0.5, 2.0, 1.5)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_nonsense_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError):
        load_settings(
            {**ENV, "CALLVAULT_DATA_DIR": str(tmp_path), "CALLVAULT_WORKER_LEASE_SECS": value}
        )


def test_the_backoff_cap_bounds_every_delay() -> None:
    rng = random.Random(7)
    delays = [policy.retry_delay(attempts, rng, cap=2.0) for attempts in range(1, 40)]
    assert max(delays) <= 2.0 * (1 + policy.BACKOFF_JITTER)
    assert delays[0] <= 1.0 * (1 + policy.BACKOFF_JITTER)


def test_the_give_up_horizon_and_its_detail() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    horizon = timedelta(seconds=90)
    assert not policy.gives_up(start, start + horizon, horizon)
    assert policy.gives_up(start, start + horizon + timedelta(seconds=1), horizon)
    assert policy.gave_up_detail(timedelta(hours=24), "HTTP 503") == (
        "custom storage kept failing for more than 24 h; last error: HTTP 503"
    )
    assert policy.gave_up_detail(horizon, "refused").startswith(
        "custom storage kept failing for more than 90 s;"
    )
