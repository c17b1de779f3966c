"""The lifecycle table (pure, no database): every legal transition, illegal ones refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from callvault.recordings.lifecycle import (
    TRANSITIONS,
    Event,
    Given,
    IllegalTransition,
    RecordingStatus,
    Webhook,
    change,
    sources,
    transition,
)

S = RecordingStatus
NOW = datetime(2026, 1, 1, tzinfo=UTC)
GIVEN: dict[Event, dict[str, object]] = {
    Event.STORED_DEFAULT: {},
    Event.STORED_CUSTOM: dict(
        backend="s3",
        bucket="b",
        object_key="k",
        recording_url="https://b/k",
        credentials_revision=2,
    ),
    Event.RETRY_SCHEDULED: dict(
        attempts=2, next_attempt_at=NOW, first_failure_at=NOW, error_detail="HTTP 503"
    ),
    Event.FAILED: dict(error_reason="r", error_detail="d", credentials_revision=None, attempts=1),
    Event.FAILED_WITHOUT_WEBHOOK: dict(
        error_reason="r", error_detail="d", credentials_revision=None, attempts=1
    ),
    Event.CREDENTIALS_REPLACED: dict(next_attempt_at=NOW),
    Event.REDELIVERY_REQUESTED: dict(next_attempt_at=NOW),
    Event.STAGING_REMOVED: {},
    Event.DELETED: {},
}
RELEASED = {"lease_owner": None, "lease_until": None}
EXPECTED: dict[tuple[RecordingStatus, Event], tuple[RecordingStatus, dict[str, object]]] = {
    (S.RECEIVED, Event.STORED_DEFAULT): (
        S.STORED,
        dict(
            backend=None,
            bucket=None,
            object_key=None,
            recording_url=None,
            credentials_revision=None,
            error_reason=None,
            error_detail=None,
            next_attempt_at=None,
            **RELEASED,
        ),
    ),
    (S.RECEIVED, Event.STORED_CUSTOM): (
        S.STORED,
        dict(
            **GIVEN[Event.STORED_CUSTOM],
            error_reason=None,
            error_detail=None,
            next_attempt_at=None,
            **RELEASED,
        ),
    ),
    (S.RECEIVED, Event.RETRY_SCHEDULED): (
        S.RECEIVED,
        dict(**GIVEN[Event.RETRY_SCHEDULED], **RELEASED),
    ),
    (S.RECEIVED, Event.FAILED): (
        S.FAILED,
        dict(**GIVEN[Event.FAILED], next_attempt_at=None, **RELEASED),
    ),
    (S.RECEIVED, Event.FAILED_WITHOUT_WEBHOOK): (
        S.FAILED,
        dict(**GIVEN[Event.FAILED], next_attempt_at=None, **RELEASED),
    ),
    (S.RECEIVED, Event.CREDENTIALS_REPLACED): (S.RECEIVED, dict(next_attempt_at=NOW)),
    (S.STORED, Event.STAGING_REMOVED): (S.STORED, dict(default_store_key=None)),
}
REQUEUED: dict[str, object] = dict(
    next_attempt_at=NOW,
    attempts=0,
    first_failure_at=None,
    error_reason=None,
    error_detail=None,
    **RELEASED,
)
for _source, _event in [
    (S.FAILED, Event.CREDENTIALS_REPLACED),
    (S.FAILED, Event.REDELIVERY_REQUESTED),
    (S.STORED, Event.REDELIVERY_REQUESTED),
]:
    EXPECTED[(_source, _event)] = (S.RECEIVED, REQUEUED)
for _source in (S.RECEIVED, S.STORED, S.FAILED):
    EXPECTED[(_source, Event.DELETED)] = (
        S.DELETED,
        dict(default_store_key=None, next_attempt_at=None, **RELEASED),
    )
WEBHOOKS = {
    Event.STORED_DEFAULT: Webhook.SAVED,
    Event.STORED_CUSTOM: Webhook.SAVED,
    Event.FAILED: Webhook.ERROR,
}


def test_the_table_holds_exactly_the_expected_transitions() -> None:
    assert set(TRANSITIONS) == set(EXPECTED)


@pytest.mark.parametrize(("source", "event"), sorted(EXPECTED))
def test_each_legal_transition_writes_its_columns(source: RecordingStatus, event: Event) -> None:
    target, columns = EXPECTED[(source, event)]
    move = change(source, event, **GIVEN[event])
    assert move.source is source
    assert move.transition.target is target
    assert dict(move.values) == {**columns, "status": target}
    assert move.webhook is WEBHOOKS.get(event)


ILLEGAL = [
    (S.STORED, Event.STORED_CUSTOM),
    (S.STORED, Event.FAILED),
    (S.FAILED, Event.STORED_DEFAULT),
    (S.FAILED, Event.RETRY_SCHEDULED),
    (S.RECEIVED, Event.REDELIVERY_REQUESTED),
    (S.RECEIVED, Event.STAGING_REMOVED),
    (S.STORED, Event.CREDENTIALS_REPLACED),
    (S.DELETED, Event.DELETED),
    (S.DELETED, Event.REDELIVERY_REQUESTED),
    (S.DELETED, Event.STORED_CUSTOM),
]


@pytest.mark.parametrize(("source", "event"), ILLEGAL)
def test_illegal_transitions_raise(source: RecordingStatus, event: Event) -> None:
    with pytest.raises(IllegalTransition):
        change(source, event, **GIVEN[event])


def test_an_unknown_state_is_illegal() -> None:
    with pytest.raises(IllegalTransition):
        transition("archived", Event.DELETED)


def test_missing_or_unknown_values_are_refused() -> None:
    with pytest.raises(TypeError, match="needs"):
        change(S.RECEIVED, Event.STORED_CUSTOM, backend="s3")
    with pytest.raises(TypeError, match="writes no"):
        change(S.RECEIVED, Event.STORED_DEFAULT, backend="s3")


def test_expiry_says_why_in_the_error_detail() -> None:
    move = change(S.STORED, Event.DELETED, error_detail="deleted after 30 days")
    assert move.values["error_detail"] == "deleted after 30 days"
    assert "error_detail" not in change(S.STORED, Event.DELETED).values


def test_sources_of_an_event() -> None:
    assert set(sources(Event.REDELIVERY_REQUESTED)) == {S.FAILED, S.STORED}
    assert set(sources(Event.DELETED)) == {S.RECEIVED, S.STORED, S.FAILED}


def test_given_columns_are_never_written_as_placeholders() -> None:
    for (source, event), _ in EXPECTED.items():
        values = change(source, event, **GIVEN[event]).values
        assert not any(isinstance(value, Given) for value in values.values())
