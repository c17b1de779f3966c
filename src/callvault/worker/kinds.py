"""What a worker runs, as the entry point describes it (callvault/jobs.py): job kinds, each a
queue table with its runners, and chores. The worker knows no domain: it claims, leases,
renews and releases rows of the tables it is given, and calls the runners."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from callvault.runtime import Crew, Inbox, JobKey

P = TypeVar("P")


@dataclass(frozen=True)
class Queue:
    """Where a kind's jobs wait: a table whose rows are the jobs (DESIGN.md). The ORM class
    has `id`, `status`, `next_attempt_at`, `lease_owner` and `lease_until`; a row is due in
    `due_status` once `next_attempt_at` has passed; claims take every `tenant`'s oldest due
    row before anyone's second."""

    model: Any
    due_status: str
    tenant: str


@dataclass(frozen=True)
class JobKind(Generic[P]):
    """A kind of job: its queue, its slots, and how to run one claimed (by id) or handed over
    in memory (by `key`, with its payload)."""

    key: JobKey[P]
    queue: Queue
    concurrency: int
    run_claimed: Callable[[str], Awaitable[None]]
    run_handed: Callable[[P], Awaitable[None]]

    @property
    def name(self) -> str:
        return self.key.name

    def open_door(self, inbox: Inbox) -> None:
        """Hand-overs of this kind, through `inbox`, run with `run_handed`."""
        inbox.accept(self.key, self.run_handed)


@dataclass(frozen=True)
class Chore:
    """Housekeeping every `every` seconds (the first run at start); counts for no queue."""

    name: str
    every: float
    run: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Jobs:
    """Everything one worker runs: `opening` before its first claim, `closing` once it has
    stopped."""

    kinds: Sequence[JobKind[Any]]
    chores: Sequence[Chore] = ()
    opening: Callable[[], Awaitable[None]] = field(default=_nothing)
    closing: Callable[[], Awaitable[None]] = field(default=_nothing)


# the entry point's table for one worker, made when it starts
JobsFactory = Callable[[Crew], Jobs]
