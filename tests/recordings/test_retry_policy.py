"""Upload retry policy (pure)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from callvault.recordings import retry_policy as policy
from callvault.storage.base import StorageError, StorageErrorKind


def test_backoff_doubles_and_caps_with_jitter() -> None:
    rng = random.Random(3)
    for attempts, base in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 256), (10, 300), (500, 300)]:
        for _ in range(30):
            delay = policy.retry_delay(attempts, rng)
            assert base * 0.8 <= delay <= base * 1.2
    with pytest.raises(ValueError):
        policy.retry_delay(0, rng)


def test_gives_up_after_a_day() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert not policy.gives_up(start, start + timedelta(hours=24))
    assert policy.gives_up(start, start + timedelta(hours=24, seconds=1))


@pytest.mark.parametrize(
    ("kind", "reason", "expected"),
    [
        (StorageErrorKind.PERMANENT_AUTH, "s3 bucket b: SignatureDoesNotMatch", policy.AUTH_FAILED),
        (StorageErrorKind.PERMANENT_NOT_FOUND, "s3 bucket b: no such bucket", policy.AUTH_FAILED),
        (
            StorageErrorKind.PERMANENT_AUTH,
            "gcs bucket b: Invalid credentials json — Expecting value",
            policy.INVALID_JSON,
        ),
        (
            StorageErrorKind.PERMANENT_AUTH,
            "ftp bucket b: Unsupported backend",
            "Unsupported backend",
        ),
        (StorageErrorKind.TRANSIENT, "s3 bucket b: timed out", policy.INTERNAL_ERROR),
    ],
)
def test_reasons(kind: StorageErrorKind, reason: str, expected: str) -> None:
    assert policy.error_reason(StorageError(kind, "s3", "b", reason)) == expected
