"""What one callvault process holds: settings, database, default store, the worker's wake-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callvault.accounts.cache import AccountCache
from callvault.batch_writer import BatchWriter
from callvault.config import Settings
from callvault.credentials.answers import AnswerCache
from callvault.credentials.generation import GenerationReader, session_read
from callvault.db import LoopReader, make_engine, make_sessionmaker, utcnow
from callvault.storage.base import ObjectStore
from callvault.storage.factory import open_default_store


@dataclass(frozen=True)
class Handoff:
    """A job this process committed, for its own worker: leased to it in the same transaction,
    so it runs without a claim and from memory, without a re-read (issue 14). `kind` is
    "recording" or "event"; `payload` holds what the worker needs (its types are the
    domains')."""

    kind: str
    job_id: str
    payload: Any


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
        self.reserved: dict[str, int] = {}
        self.jobs: list[Handoff] = []
        self.ready = asyncio.Event()

    def reserve(self, kind: str) -> datetime | None:
        waiting = self.reserved.get(kind, 0) + sum(1 for job in self.jobs if job.kind == kind)
        if self._room(kind) - waiting <= 0:
            return None
        self.reserved[kind] = self.reserved.get(kind, 0) + 1
        return utcnow() + timedelta(seconds=self.lease_seconds)

    def cancel(self, kind: str) -> None:
        self.reserved[kind] = max(0, self.reserved.get(kind, 0) - 1)

    def hand(self, job: Handoff) -> None:
        self.cancel(job.kind)
        self.jobs.append(job)
        self.ready.set()

    def take(self) -> list[Handoff]:
        jobs, self.jobs = self.jobs, []
        self.ready.clear()
        return jobs


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    default_store: ObjectStore
    # set when new work is committed, so an in-process worker starts at once instead of polling
    work_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # API-key lookups of this process (accounts/cache.py)
    accounts: AccountCache = field(default_factory=AccountCache)
    # rendered credentials GET answers (credentials/answers.py)
    credential_answers: AnswerCache = field(default_factory=AnswerCache)
    # what the answers and the worker's held credentials are checked against
    # (credentials/generation.py); made from the database settings (__post_init__)
    credential_generation: GenerationReader = field(init=False)
    # default-store keys ingest is writing right now (recordings/ingest.py): two recordings
    # of one leaf in one second never share a key, even before either row is committed
    ingest_keys: set[str] = field(default_factory=set)
    # the in-process worker's door for jobs committed here (None: no worker in this process)
    inbox: Inbox | None = None
    # group commit (batch_writer.py): ingest's rows and the worker's outcomes and delivery
    # records that are ready together share one transaction and one fsync (issue 24)
    batch_writer: BatchWriter = field(init=False)

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
        # here rather than in build(): a copy (dataclasses.replace, as tests make with other
        # settings) gets its own reader too
        self.credential_generation = GenerationReader(
            LoopReader.for_url(self.settings.database_url), session_read(self.sessions)
        )
        self.batch_writer = BatchWriter(self.sessions)

    async def close(self) -> None:
        self.credential_generation.close()
        await self.engine.dispose()
