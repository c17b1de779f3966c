"""What one callvault process holds: settings, database, default store, the worker's wake-up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from callvault.accounts.cache import AccountCache
from callvault.config import Settings
from callvault.db import make_engine, make_sessionmaker
from callvault.storage.base import ObjectStore
from callvault.storage.factory import open_default_store


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
    # default-store keys ingest is writing right now (recordings/ingest.py): two recordings
    # of one leaf in one second never share a key, even before either row is committed
    ingest_keys: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            default_store=open_default_store(
                settings.default_store_url,
                data_dir=settings.data_dir,
                public_url=settings.public_url,
                link_secret=settings.link_secret,
            ),
        )

    async def close(self) -> None:
        await self.engine.dispose()
