"""Every query on storage credentials (one row per connection)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.credentials.models import CredentialsGeneration, ExternalId, StorageCredentials
from callvault.db import LoopReader

GENERATION = select(CredentialsGeneration.value).where(CredentialsGeneration.id == 1)
# the same, for db.LoopReader (plain SQL: no SQLAlchemy on that path)
GENERATION_SQL = "SELECT value FROM credentials_generation WHERE id = 1"


async def by_connection(session: AsyncSession, connection_id: str) -> StorageCredentials | None:
    return await session.get(StorageCredentials, connection_id)


async def for_account(
    session: AsyncSession, account_id: str, connection_id: str
) -> StorageCredentials | None:
    row = await session.get(StorageCredentials, connection_id)
    return row if row is not None and row.account_id == account_id else None


async def add(session: AsyncSession, row: StorageCredentials) -> None:
    session.add(row)
    await session.flush()


async def delete(session: AsyncSession, row: StorageCredentials) -> None:
    await session.delete(row)
    await session.flush()


async def external_id(session: AsyncSession, connection_id: str) -> ExternalId | None:
    return await session.get(ExternalId, connection_id)


async def generation(session: AsyncSession) -> int:
    return int((await session.execute(GENERATION)).scalar_one())


def generation_on_loop(reader: LoopReader) -> int:
    return int(reader.scalar(GENERATION_SQL))
