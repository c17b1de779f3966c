"""The next state of an event after a round, without a database or a receiver."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from callvault.webhooks.attempt import AttemptResult, Verdict
from callvault.webhooks.models import EventStatus
from callvault.webhooks.outcome import next_state, not_sent, round_error, round_verdict

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SCHEDULE = (10.0, 20.0)


def result(url: str, verdict: Verdict, error: str | None = None) -> AttemptResult:
    return AttemptResult(url=url, verdict=verdict, status_code=None, latency_ms=1.0, error=error)


def test_a_round_is_delivered_if_any_url_took_it() -> None:
    results = [result("p", Verdict.RETRY, "HTTP 500"), result("f", Verdict.DELIVERED)]
    assert round_verdict(results) is Verdict.DELIVERED
    assert round_error(results) == "p: HTTP 500"


def test_a_round_failed_for_good_only_if_every_url_refused() -> None:
    assert round_verdict([result("p", Verdict.REFUSED), result("f", Verdict.REFUSED)]) is (
        Verdict.REFUSED
    )
    assert round_verdict([result("p", Verdict.REFUSED), result("f", Verdict.RETRY)]) is (
        Verdict.RETRY
    )
    assert round_verdict([]) is Verdict.RETRY


def test_delivered_clears_the_error_and_the_next_attempt() -> None:
    state = next_state(
        Verdict.DELIVERED,
        attempt=2,
        error="p: HTTP 500",
        now=NOW,
        rng=random.Random(1),
        schedule=SCHEDULE,
    )
    assert state.verdict is Verdict.DELIVERED
    assert state.values == {
        "attempts": 2,
        "last_error": None,
        "status": EventStatus.DELIVERED,
        "delivered_at": NOW,
        "next_attempt_at": None,
    }


def test_a_retry_waits_the_schedules_jittered_delay() -> None:
    state = next_state(
        Verdict.RETRY, attempt=1, error="x", now=NOW, rng=random.Random(1), schedule=SCHEDULE
    )
    assert state.verdict is Verdict.RETRY
    assert set(state.values) == {"attempts", "last_error", "next_attempt_at"}
    assert state.next_attempt_at is not None
    assert timedelta(seconds=8) <= state.next_attempt_at - NOW <= timedelta(seconds=12)


def test_the_schedule_running_out_or_a_refusal_fails_for_good() -> None:
    for verdict, attempt in ((Verdict.RETRY, 3), (Verdict.REFUSED, 1)):
        state = next_state(
            verdict, attempt=attempt, error="x", now=NOW, rng=random.Random(1), schedule=SCHEDULE
        )
        assert state.verdict is Verdict.REFUSED
        assert state.values == {
            "attempts": attempt,
            "last_error": "x",
            "status": EventStatus.FAILED,
            "next_attempt_at": None,
        }


def test_not_sent_keeps_the_attempt_count() -> None:
    state = not_sent("application is inactive")
    assert state.verdict is Verdict.REFUSED
    assert state.values == {
        "status": EventStatus.FAILED,
        "last_error": "application is inactive: not sent",
        "next_attempt_at": None,
    }
