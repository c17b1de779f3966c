"""What a delivery round makes of an event, without I/O: delivered, retried at a time, or failed
for good — and the columns that say so.

- A round is delivered if any URL took it; it failed for good if every URL it tried refused it
  for good; otherwise it is retried, after the schedule's next delay (webhooks/schedule.py),
  until the schedule runs out.
- A round that crashed in our own code counts as one that is worth another round.
- `attempts` counts rounds; an event not sent at all (its application is inactive or gone)
  keeps its count.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from callvault.webhooks.attempt import MAX_ERROR_CHARS, AttemptResult, Verdict
from callvault.webhooks.models import EventStatus
from callvault.webhooks.schedule import next_delay


@dataclass(frozen=True)
class NextState:
    """The event after a round: the round's verdict (REFUSED: failed for good) and the columns
    to write with the lease given back."""

    verdict: Verdict
    values: dict[str, Any]

    @property
    def next_attempt_at(self) -> datetime | None:
        return self.values.get("next_attempt_at")


def round_verdict(results: Sequence[AttemptResult]) -> Verdict:
    """Delivered if any URL took it; refused if every URL refused; else retry."""
    if any(r.verdict is Verdict.DELIVERED for r in results):
        return Verdict.DELIVERED
    if results and all(r.verdict is Verdict.REFUSED for r in results):
        return Verdict.REFUSED
    return Verdict.RETRY


def round_error(results: Sequence[AttemptResult]) -> str | None:
    """The round's `last_error`: each failed URL with its error."""
    errors = [f"{r.url}: {r.error}" for r in results if r.error]
    return "; ".join(errors)[:MAX_ERROR_CHARS] if errors else None


def next_state(
    verdict: Verdict,
    *,
    attempt: int,
    error: str | None,
    now: datetime,
    rng: random.Random,
    schedule: tuple[float, ...],
) -> NextState:
    """The event after round `attempt` (1-based) whose verdict is `verdict`."""
    values: dict[str, Any] = {"attempts": attempt, "last_error": error}
    if verdict is Verdict.DELIVERED:
        values.update(
            status=EventStatus.DELIVERED, delivered_at=now, next_attempt_at=None, last_error=None
        )
        return NextState(Verdict.DELIVERED, values)
    delay = None if verdict is Verdict.REFUSED else next_delay(attempt, rng, schedule)
    if delay is None:
        values.update(status=EventStatus.FAILED, next_attempt_at=None)
        return NextState(Verdict.REFUSED, values)
    values.update(next_attempt_at=now + timedelta(seconds=delay))
    return NextState(Verdict.RETRY, values)


def not_sent(why: str) -> NextState:
    """An event whose application is inactive or deleted: failed without a request (kept for
    the record; `callvault webhooks retry` sends it again once the application is active)."""
    values: dict[str, Any] = {
        "status": EventStatus.FAILED,
        "last_error": f"{why}: not sent",
        "next_attempt_at": None,
    }
    return NextState(Verdict.REFUSED, values)
