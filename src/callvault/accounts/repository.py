from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.accounts.models import Account


async def add(session: AsyncSession, account: Account) -> None:
    session.add(account)
    await session.flush()


async def by_api_key_hash(session: AsyncSession, api_key_hash: str) -> Account | None:
    result = await session.execute(select(Account).where(Account.api_key_hash == api_key_hash))
    return result.scalar_one_or_none()


async def by_id(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def all_accounts(session: AsyncSession) -> list[Account]:
    return list((await session.execute(select(Account))).scalars())
