"""Every query on recording encryption keys, each scoped to an account or a key id. (Ingest
reads the connection's key with its own context query: recordings/repository.py.)"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications.models import Application
from callvault.encryption_keys.models import RecordingEncryptionKey


async def add(session: AsyncSession, key: RecordingEncryptionKey) -> None:
    session.add(key)
    await session.flush()


async def for_account(
    session: AsyncSession, account_id: str, key_id: str
) -> RecordingEncryptionKey | None:
    result = await session.execute(
        select(RecordingEncryptionKey).where(
            RecordingEncryptionKey.id == key_id, RecordingEncryptionKey.account_id == account_id
        )
    )
    return result.scalar_one_or_none()


async def page(
    session: AsyncSession, account_id: str, *, offset: int, limit: int
) -> Sequence[RecordingEncryptionKey]:
    query = (
        select(RecordingEncryptionKey)
        .where(RecordingEncryptionKey.account_id == account_id)
        .order_by(RecordingEncryptionKey.created_at.desc(), RecordingEncryptionKey.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def count(session: AsyncSession, account_id: str) -> int:
    query = select(func.count()).where(RecordingEncryptionKey.account_id == account_id)
    return int((await session.execute(query)).scalar_one())


async def applications_using(session: AsyncSession, key_id: str) -> list[str]:
    query = select(Application.id).where(Application.recording_encryption_key_id == key_id)
    return list((await session.execute(query)).scalars())


async def delete(session: AsyncSession, key: RecordingEncryptionKey) -> None:
    await session.delete(key)
    await session.flush()
