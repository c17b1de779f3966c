"""A recording's life as pure transitions (no I/O): its states, the legal moves between them,
the columns each move writes and the webhook it emits.

Every state change of a recording row goes through `change()`: a move that is not in
`TRANSITIONS` raises `IllegalTransition` (a programming error, caught by
tests/recordings/test_lifecycle.py). The database half — the UPDATEs, guarded by the lease and
the source state — is recordings/transitions.py. The upload retry policy the pipeline applies
before choosing between `RETRY_SCHEDULED` and `FAILED` is recordings/retry_policy.py.

Ingest inserts a row `received` (custom storage configured: the pipeline moves it) or `stored`
(the default store is its final place); both are starting states, not transitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class RecordingStatus(StrEnum):
    RECEIVED = "received"  # durable in the default store, waiting for the worker
    STORED = "stored"  # in its final place (customer bucket or default store)
    FAILED = "failed"  # custom storage failed permanently: kept in the default store
    DELETED = "deleted"


class Event(StrEnum):
    """What happens to a recording (the name of a transition)."""

    STORED_DEFAULT = "stored in the default store"
    STORED_CUSTOM = "stored in custom storage"
    RETRY_SCHEDULED = "upload retry scheduled"
    FAILED = "failed"
    # the failure path itself crashed: failed for good, no error webhook could be made
    FAILED_WITHOUT_WEBHOOK = "failed without a webhook"
    CREDENTIALS_REPLACED = "credentials replaced"
    REDELIVERY_REQUESTED = "redelivery requested"
    STAGING_REMOVED = "staging copy removed"
    DELETED = "deleted"


class Webhook(StrEnum):
    SAVED = "call.recording.saved"
    ERROR = "call.recording.error"


class Given(StrEnum):
    """A column whose value the caller supplies (REQUIRED) or may supply (OPTIONAL)."""

    REQUIRED = "required"
    OPTIONAL = "optional"


S = RecordingStatus
# columns a move back to the queue resets (a fresh start: attempts and errors forgotten)
_REQUEUE: Mapping[str, object] = {
    "next_attempt_at": Given.REQUIRED,
    "attempts": 0,
    "first_failure_at": None,
    "error_reason": None,
    "error_detail": None,
    "lease_owner": None,
    "lease_until": None,
}
# the pipeline's moves end the worker's hold on the row
_RELEASED: Mapping[str, object] = {"lease_owner": None, "lease_until": None}
_STORED: Mapping[str, object] = {
    **_RELEASED,
    "error_reason": None,
    "error_detail": None,
    "next_attempt_at": None,
}
_PLACEMENT = ("backend", "bucket", "object_key", "recording_url", "credentials_revision")
_RETRY = ("attempts", "next_attempt_at", "first_failure_at", "error_detail")
_FAILED: Mapping[str, object] = {
    **_RELEASED,
    "error_reason": Given.REQUIRED,
    "error_detail": Given.REQUIRED,
    "credentials_revision": Given.REQUIRED,
    "attempts": Given.REQUIRED,
    "next_attempt_at": None,
}
# the API's delete and retention's expiry alike: the default-store copy is gone, the row is
# out of the queue and leased to no one; expiry says why in error_detail
_DELETED: Mapping[str, object] = {
    "default_store_key": None,
    "next_attempt_at": None,
    "lease_owner": None,
    "lease_until": None,
    "error_detail": Given.OPTIONAL,
}


@dataclass(frozen=True)
class Transition:
    source: RecordingStatus
    event: Event
    target: RecordingStatus
    writes: Mapping[str, object]  # column -> value, or Given for the caller's value
    webhook: Webhook | None = None


def _table(*transitions: Transition) -> dict[tuple[RecordingStatus, Event], Transition]:
    return {(t.source, t.event): t for t in transitions}


TRANSITIONS = _table(
    Transition(
        S.RECEIVED,
        Event.STORED_DEFAULT,
        S.STORED,
        {**dict.fromkeys(_PLACEMENT), **_STORED},
        Webhook.SAVED,
    ),
    Transition(
        S.RECEIVED,
        Event.STORED_CUSTOM,
        S.STORED,
        {**dict.fromkeys(_PLACEMENT, Given.REQUIRED), **_STORED},
        Webhook.SAVED,
    ),
    Transition(
        S.RECEIVED,
        Event.RETRY_SCHEDULED,
        S.RECEIVED,
        {**dict.fromkeys(_RETRY, Given.REQUIRED), **_RELEASED},
    ),
    Transition(S.RECEIVED, Event.FAILED, S.FAILED, _FAILED, Webhook.ERROR),
    Transition(S.RECEIVED, Event.FAILED_WITHOUT_WEBHOOK, S.FAILED, _FAILED),
    Transition(S.FAILED, Event.CREDENTIALS_REPLACED, S.RECEIVED, _REQUEUE),
    # waiting on a backoff: tried at once with the new credentials
    Transition(
        S.RECEIVED, Event.CREDENTIALS_REPLACED, S.RECEIVED, {"next_attempt_at": Given.REQUIRED}
    ),
    Transition(S.FAILED, Event.REDELIVERY_REQUESTED, S.RECEIVED, _REQUEUE),
    # kept in the default store (no custom storage then): the repository's query also asks
    # that it is in no customer bucket (`backend` null)
    Transition(S.STORED, Event.REDELIVERY_REQUESTED, S.RECEIVED, _REQUEUE),
    Transition(S.STORED, Event.STAGING_REMOVED, S.STORED, {"default_store_key": None}),
    Transition(S.RECEIVED, Event.DELETED, S.DELETED, _DELETED),
    Transition(S.STORED, Event.DELETED, S.DELETED, _DELETED),
    Transition(S.FAILED, Event.DELETED, S.DELETED, _DELETED),
)


class IllegalTransition(Exception):
    """A state change the table does not allow: a bug in the caller."""


@dataclass(frozen=True)
class Change:
    """One transition with its values: what the repository writes."""

    transition: Transition
    values: Mapping[str, object]  # every column written, `status` included

    @property
    def source(self) -> RecordingStatus:
        return self.transition.source

    @property
    def webhook(self) -> Webhook | None:
        return self.transition.webhook


def transition(source: str, event: Event) -> Transition:
    try:
        return TRANSITIONS[(RecordingStatus(source), event)]
    except (KeyError, ValueError):
        raise IllegalTransition(f"a {source} recording cannot be {event!r}") from None


def sources(event: Event) -> tuple[RecordingStatus, ...]:
    """The states `event` may happen in."""
    return tuple(source for source, named in TRANSITIONS if named is event)


def change(source: str, event: Event, **given: object) -> Change:
    """The transition from `source` on `event` with the caller's values; raises
    IllegalTransition for a move not in the table, TypeError for missing or unknown values."""
    move = transition(source, event)
    required = {name for name, value in move.writes.items() if value is Given.REQUIRED}
    allowed = required | {name for name, value in move.writes.items() if value is Given.OPTIONAL}
    if missing := required - given.keys():
        raise TypeError(f"{event!r} needs {sorted(missing)}")
    if unknown := given.keys() - allowed:
        raise TypeError(f"{event!r} writes no {sorted(unknown)}")
    values = {name: value for name, value in move.writes.items() if not isinstance(value, Given)}
    return Change(move, {**values, **given, "status": move.target})
