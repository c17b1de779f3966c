"""Every query on storage credentials (one row per connection)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from callvault.credentials.models import ExternalId, StorageCredentials


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
