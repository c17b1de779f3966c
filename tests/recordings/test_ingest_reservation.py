"""Ingest's reservation of a worker slot: handed over, or cancelled whatever way the ingest
leaves (an error answer, a lost race), never left held."""

from __future__ import annotations

import pytest

from callvault.recordings.ingest import Reservation
from callvault.runtime import Handoff, Inbox, JobKey

EVENT: JobKey[None] = JobKey("event")


async def _deliver(payload: None) -> None:
    return None


def inbox(room: int = 1) -> Inbox:
    door = Inbox("worker-1", lease_seconds=60, room=lambda kind: room)
    door.accept(EVENT, _deliver)  # the worker's runner of "event" hand-overs
    return door


def test_a_handed_job_leaves_the_slot_to_the_job() -> None:
    door = inbox()
    with Reservation(door, "event") as reservation:
        assert reservation.held and reservation.owner == "worker-1"
        assert reservation.lease_until is not None
        reservation.hand(Handoff(EVENT, "event-1", None))
    assert door.reserved == {"event": 0}
    assert [job.job_id for job in door.jobs] == ["event-1"]


def test_a_failed_ingest_gives_the_slot_back() -> None:
    door = inbox()
    with pytest.raises(RuntimeError), Reservation(door, "recording"):
        assert door.reserved == {"recording": 1}
        raise RuntimeError("the commit failed")
    assert door.reserved == {"recording": 0} and not door.jobs


def test_a_slot_is_given_back_once() -> None:
    door = inbox(room=2)
    door.reserve("recording")  # another ingest's
    with Reservation(door, "recording") as reservation:
        reservation.cancel()  # e.g. its row goes to the workers' claim instead
        assert not reservation.held and reservation.owner is None
    assert door.reserved == {"recording": 1}


@pytest.mark.parametrize("door", [None, inbox(room=0)])
def test_without_a_worker_or_room_nothing_is_held(door: Inbox | None) -> None:
    with Reservation(door, "event") as reservation:
        assert not reservation.held
        assert reservation.owner is None and reservation.lease_until is None
    assert door is None or door.reserved == {}
