from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts.models import Account, ApiKey


async def add(session: AsyncSession, account: Account) -> None:
    session.add(account)
    await session.flush()


async def add_key(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


async def by_api_key_hash(
    session: AsyncSession, api_key_hash: str
) -> tuple[Account, ApiKey] | None:
    row = (
        await session.execute(
            select(Account, ApiKey)
            .join(ApiKey, ApiKey.account_id == Account.id)
            .where(ApiKey.key_hash == api_key_hash)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def by_id(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def all_accounts(session: AsyncSession) -> list[Account]:
    return list((await session.execute(select(Account))).scalars())


async def keys_of(session: AsyncSession, account_id: str) -> list[ApiKey]:
    result = await session.execute(
        select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(result.scalars())


async def key_by_id(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def delete_key(session: AsyncSession, key_id: str) -> None:
    key_hash = (
        await session.execute(select(ApiKey.key_hash).where(ApiKey.id == key_id))
    ).scalar_one_or_none()
    await session.execute(delete(ApiKey).where(ApiKey.id == key_id))
    if key_hash is not None:
        # the column the previous release authenticates with (kept by 0008_review until the
        # release after: expand, then contract): a revoked key must not work there either
        await session.execute(
            text("UPDATE accounts SET api_key_hash = NULL WHERE api_key_hash = :key_hash"),
            {"key_hash": key_hash},
        )


async def mark_used(session: AsyncSession, key_id: str, moment: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=moment))
