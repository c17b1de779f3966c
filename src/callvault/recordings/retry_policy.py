"""What the pipeline does after a failed upload to custom storage (pure, no I/O).

- transient (timeouts, 5xx, connection refused, a size/sha256 mismatch after the put): try again
  after 1 s, 2 s, 4 s … capped at 5 min, ±20 % jitter; once the failures have lasted more than
  24 h the recording fails for good with "Internal server error". The cap and the 24 h are
  settings (CALLVAULT_UPLOAD_BACKOFF_CAP_SECS, CALLVAULT_UPLOAD_GIVE_UP_SECS) so that tests and
  demos need not wait.
- permanent (the store said no: credentials, bucket, configuration): fail at once with the
  closest reason of the spec's list (reference/telnyx-api.md):
  "Failed to authorize with storage using custom credentials", "Invalid credentials json",
  "Unsupported backend", "Internal server error".
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from callvault.storage.base import StorageError, StorageErrorKind

BACKOFF_BASE_SECS = 1.0
BACKOFF_CAP_SECS = 300.0
BACKOFF_JITTER = 0.2
GIVE_UP_AFTER = timedelta(hours=24)

AUTH_FAILED = "Failed to authorize with storage using custom credentials"
INVALID_JSON = "Invalid credentials json"
UNSUPPORTED_BACKEND = "Unsupported backend"
INTERNAL_ERROR = "Internal server error"


def retry_delay(attempts: int, rng: random.Random, cap: float = BACKOFF_CAP_SECS) -> float:
    """Seconds before the next try after `attempts` failed tries (1-based)."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    # min() before the power: 2**10000 would not fit in a float
    base = min(cap, BACKOFF_BASE_SECS * 2 ** min(attempts - 1, 30))
    return base * (1 + rng.uniform(-BACKOFF_JITTER, BACKOFF_JITTER))


def gives_up(first_failure_at: datetime, now: datetime, after: timedelta = GIVE_UP_AFTER) -> bool:
    """Transient failures that have lasted longer than `after` (24 h) become permanent."""
    return now - first_failure_at > after


def gave_up_detail(after: timedelta, last_error: str) -> str:
    """The error detail of a recording whose transient failures lasted too long."""
    seconds = after.total_seconds()
    span = f"{seconds / 3600:g} h" if seconds % 3600 == 0 else f"{seconds:g} s"
    return f"custom storage kept failing for more than {span}; last error: {last_error}"


def error_reason(error: StorageError) -> str:
    """The spec's reason for a permanent storage error.

    A missing or misnamed bucket has no reason of its own in the spec; it is a configuration the
    credentials cannot write to, so it gets the authorization reason, and `detail` (the store's
    own reason) says which it was.
    """
    if error.kind is StorageErrorKind.TRANSIENT:
        return INTERNAL_ERROR
    if "Invalid credentials json" in error.reason:
        return INVALID_JSON
    if error.reason.endswith("Unsupported backend"):
        return UNSUPPORTED_BACKEND
    return AUTH_FAILED
