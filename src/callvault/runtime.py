"""What one callvault process holds: settings, database, default store, the worker's wake-up.

Infrastructure only: the domains' per-process state (the API-key cache, the credentials answer
cache and generation reader, the default-store keys ingest is writing) is theirs. A domain
keeps it in the runtime's `domain_part` slot, keyed by its own type, through a small accessor
of its own (`accounts.cache.account_cache`, `credentials.answers.answer_cache`,
`generation.generation_reader`, `recordings.ingest.keys_being_written`). Why a slot
rather than a field per cache: this module then names no domain (shared/layers.json), and what
a domain keeps still lives and dies with the runtime — made on first use, closed by `close()`,
and a copy (`dataclasses.replace`, as tests make with other settings) starts with its own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Generic, Protocol, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callvault.batch_writer import BatchWriter
from callvault.config import Settings
from callvault.db import (
    LoopReader,
    SessionWrites,
    ThreadWrites,
    make_engine,
    make_sessionmaker,
    utcnow,
    write_transactions,
)
from callvault.storage.base import ObjectStore
from callvault.storage.factory import open_default_store

P = TypeVar("P")


@dataclass(frozen=True)
class JobKey(Generic[P]):
    """A kind of job the in-process worker takes over in memory, by its queue's name
    ("recording", "event"), typed by what a hand-over carries (`P`): whoever hands over and
    the kind that runs it agree on `P` through the key."""

    name: str


@dataclass(frozen=True)
class Handoff(Generic[P]):
    """A job this process committed, for its own worker: leased to it in the same transaction,
    so it runs without a claim and from memory, without a re-read (issue 14). `payload` is
    what the job's kind (`key`) runs it with."""

    key: JobKey[P]
    job_id: str
    payload: P

    @property
    def kind(self) -> str:
        return self.key.name

    def bound(self, inbox: Inbox) -> HandedJob:
        """The job as the worker runs it: its kind's runner with this payload."""
        return HandedJob(self.kind, self.job_id, partial(inbox.runner(self.key), self.payload))


class AnyHandoff(Protocol):
    """A hand-over of any kind (a Handoff of whatever payload)."""

    @property
    def kind(self) -> str: ...

    def bound(self, inbox: Inbox) -> HandedJob: ...


@dataclass(frozen=True)
class HandedJob:
    """A hand-over bound to its kind's runner: what the worker starts."""

    kind: str
    job_id: str
    run: Callable[[], Awaitable[None]]


class Inbox:
    """The in-process worker's door for new jobs (`Runtime.inbox`, set while it runs).

    Whoever commits a job first `reserve`s: a lease until when (the row is written leased to
    `owner`), or None when the worker has no room (then the row stays unleased and the
    worker's claim takes it in turn). After the commit, `hand` it over; if nothing was
    committed, `cancel`. A crash in between loses nothing: the lease expires and any worker
    claims the row."""

    def __init__(self, owner: str, lease_seconds: float, room: Callable[[str], int]) -> None:
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._room = room  # by kind: how many more jobs of that queue the worker takes
        # by kind: the runner of a hand-over (a callable of that key's payload type)
        self._runners: dict[str, object] = {}
        self.reserved: dict[str, int] = {}
        self.jobs: list[HandedJob] = []
        self.ready = asyncio.Event()

    def accept(self, key: JobKey[P], run: Callable[[P], Awaitable[None]]) -> None:
        """The worker runs hand-overs of `key` with `run`."""
        self._runners[key.name] = run

    def runner(self, key: JobKey[P]) -> Callable[[P], Awaitable[None]]:
        """What runs hand-overs of `key`."""
        # accept() stored a runner of this key's payload type under its name
        return cast("Callable[[P], Awaitable[None]]", self._runners[key.name])

    def reserve(self, kind: str) -> datetime | None:
        waiting = self.reserved.get(kind, 0) + sum(1 for job in self.jobs if job.kind == kind)
        if self._room(kind) - waiting <= 0:
            return None
        self.reserved[kind] = self.reserved.get(kind, 0) + 1
        return utcnow() + timedelta(seconds=self.lease_seconds)

    def cancel(self, kind: str) -> None:
        self.reserved[kind] = max(0, self.reserved.get(kind, 0) - 1)

    def hand(self, handoff: AnyHandoff) -> None:
        self.cancel(handoff.kind)
        self.jobs.append(handoff.bound(self))
        self.ready.set()

    def take(self) -> list[HandedJob]:
        jobs, self.jobs = self.jobs, []
        self.ready.clear()
        return jobs


class Crew(Protocol):
    """What a job kind's runners may ask of the worker running them."""

    owner: str
    lease_seconds: float
    rng: random.Random

    def hand(self, key: JobKey[P], job_id: str, payload: P) -> None:
        """Run a job this worker holds the lease of, from memory (e.g. the event a recording's
        state change made), in its kind's slots: at once if one is free, else queued (the
        slots bound what runs, whoever hands it over)."""

    def run_held(self, kind: str, job_id: str) -> None:
        """As `hand`, for a held job known by id only (run as if claimed)."""


# what a domain keeps in the runtime (Runtime.domain_part)
Part = TypeVar("Part")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    default_store: ObjectStore
    # set when new work is committed, so an in-process worker starts at once instead of polling
    work_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # the in-process worker's door for jobs committed here (None: no worker in this process)
    inbox: Inbox | None = None
    # group commit (batch_writer.py): ingest's rows and the worker's outcomes and delivery
    # records that are ready together share one transaction and one fsync (issue 24)
    batch_writer: BatchWriter = field(init=False)
    _express_engine: AsyncEngine | None = field(init=False, default=None, repr=False)
    # small reads on the event loop itself (SQLite in a file; None otherwise): the credentials
    # generation, ingest's context. Its connection opens on first use, closes with the runtime
    loop_reader: LoopReader | None = field(init=False, default=None, repr=False)
    # what the domains keep per process, by type (`domain_part`), and how to close it
    _parts: dict[type, object] = field(init=False, default_factory=dict, repr=False)
    _closers: list[Callable[[], None]] = field(init=False, default_factory=list, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        sessions = make_sessionmaker(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            default_store=open_default_store(
                settings.default_store_url,
                data_dir=settings.data_dir,
                public_url=settings.public_url,
                link_secret=settings.link_secret,
            ),
        )

    def __post_init__(self) -> None:
        self.loop_reader = LoopReader.for_url(self.settings.database_url)
        if self.engine.dialect.name == "postgresql":
            # the express writer's own connection, kept between batches, in autocommit: between
            # a receiver's 2xx and its record, one round trip (no pre-ping, BEGIN or COMMIT; a
            # dead connection fails one batch, whose records are retried as in an outage)
            self._express_engine = make_engine(
                self.settings.database_url, pool_size=1, pre_ping=False, autocommit=True
            )
        writes = write_transactions(self.settings.database_url, self.sessions)
        express = None
        if self._express_engine is not None:
            express = SessionWrites(make_sessionmaker(self._express_engine))
        self.batch_writer = BatchWriter(writes, express_writes=express)

    @property
    def writing_engines(self) -> tuple[Engine, ...]:
        """Every engine this runtime writes through: its own, the group commit's thread's
        (SQLite), the express writer's (PostgreSQL)."""
        engines = [self.engine.sync_engine]
        if isinstance(self.batch_writer.writes, ThreadWrites):
            engines.append(self.batch_writer.writes.engine)
        if self._express_engine is not None:
            engines.append(self._express_engine.sync_engine)
        return tuple(engines)

    def domain_part(
        self,
        kind: type[Part],
        make: Callable[[Runtime], Part],
        close: Callable[[Part], None] | None = None,
    ) -> Part:
        """The one `kind` this runtime keeps for a domain, made by `make` on first use;
        `close`, if given, runs when the runtime closes (before the engine is disposed)."""
        part = self._parts.get(kind)
        if part is None:
            part = self._parts[kind] = made = make(self)
            if close is not None:
                self._closers.append(lambda: close(made))
        return cast(Part, part)

    async def close(self) -> None:
        for close in self._closers:
            close()
        if self.loop_reader is not None:
            self.loop_reader.close()
        self.batch_writer.writes.close()
        if self._express_engine is not None:
            await self._express_engine.dispose()
        await self.engine.dispose()
