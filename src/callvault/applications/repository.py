"""Every query on applications. Reads are always scoped to an account, except `by_id` (for the
pipeline, which knows the connection id from the recording it handles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications.ids import is_application_id
from callvault.applications.models import Application

# the `sort` values Telnyx documents, mapped to our columns (connection_name is the app name)
SORT_COLUMNS: dict[str, Any] = {
    "created_at": Application.created_at,
    "connection_name": Application.application_name,
    "active": Application.active,
}


async def add(session: AsyncSession, application: Application) -> None:
    session.add(application)
    await session.flush()


async def by_id(session: AsyncSession, application_id: str) -> Application | None:
    return await session.get(Application, application_id)


async def for_account(
    session: AsyncSession, account_id: str, application_id: str
) -> Application | None:
    if not is_application_id(application_id):  # cannot exist: no query needed
        return None
    result = await session.execute(
        select(Application).where(
            Application.id == application_id, Application.account_id == account_id
        )
    )
    return result.scalar_one_or_none()


def _filtered(
    account_id: str, name_contains: str | None, outbound_voice_profile_id: str | None
) -> Any:
    query = select(Application).where(Application.account_id == account_id)
    if name_contains:
        query = query.where(Application.application_name.icontains(name_contains, autoescape=True))
    if outbound_voice_profile_id is not None:
        query = query.where(Application.outbound_voice_profile_id == outbound_voice_profile_id)
    return query


async def page(
    session: AsyncSession,
    account_id: str,
    *,
    offset: int,
    limit: int,
    sort: str,
    name_contains: str | None = None,
    outbound_voice_profile_id: str | None = None,
) -> Sequence[Application]:
    descending = sort.startswith("-")
    column = SORT_COLUMNS[sort.lstrip("-")]
    order = column.desc() if descending else column.asc()
    # the id breaks ties so that pages neither repeat nor skip rows
    tie = Application.id.desc() if descending else Application.id.asc()
    query = (
        _filtered(account_id, name_contains, outbound_voice_profile_id)
        .order_by(order, tie)
        .offset(offset)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def count(
    session: AsyncSession,
    account_id: str,
    name_contains: str | None = None,
    outbound_voice_profile_id: str | None = None,
) -> int:
    filtered = _filtered(account_id, name_contains, outbound_voice_profile_id)
    query = select(func.count()).select_from(filtered.subquery())
    return int((await session.execute(query)).scalar_one())


async def delete(session: AsyncSession, application: Application) -> None:
    # the database cascades to the application's storage credentials
    await session.delete(application)
    await session.flush()
