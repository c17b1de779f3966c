"""Call Control applications: create, read, list, update, delete, always within one account."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from callvault.applications import repository
from callvault.applications.ids import new_application_id
from callvault.applications.models import Application
from callvault.applications.schemas import (
    CreateCallControlApplicationRequest,
    UpdateCallControlApplicationRequest,
)
from callvault.db import transaction, utcnow
from callvault.encryption_keys.service import check_usable as check_encryption_key
from callvault.errors import invalid, not_found
from callvault.outbound.addresses import refuse_reason
from callvault.runtime import Runtime

URL_FIELDS = ("webhook_event_url", "webhook_event_failover_url")


@dataclass(frozen=True)
class Page:
    items: Sequence[Application]
    page_number: int
    page_size: int
    total_results: int


async def check_webhook_urls(urls: dict[str, str | None], *, allow_private: bool) -> None:
    """422 at the field's pointer when a webhook URL may not be called (address policy)."""
    for name in URL_FIELDS:
        url = urls.get(name)
        if not url:  # null or "": no URL
            continue
        reason = await refuse_reason(url, allow_private=allow_private)
        if reason is not None:
            raise invalid(f"{name}: {reason}", pointer=f"/{name}")


async def get_owned(session: AsyncSession, account_id: str, application_id: str) -> Application:
    """The account's application, or 404 (also when it belongs to another account)."""
    application = await repository.for_account(session, account_id, application_id)
    if application is None:
        raise not_found()
    return application


async def create(
    runtime: Runtime, account_id: str, request: CreateCallControlApplicationRequest
) -> Application:
    # the address check resolves names: done before the transaction takes the write lock
    await check_webhook_urls(
        request.model_dump(include=set(URL_FIELDS)),
        allow_private=runtime.settings.allow_private_networks,
    )
    now = utcnow()
    application = Application(
        id=new_application_id(),
        account_id=account_id,
        **request.columns(),
        created_at=now,
        updated_at=now,
    )
    async with transaction(runtime.sessions) as session:
        await check_encryption_key(session, account_id, request.recording_encryption_key_id)
        await repository.add(session, application)
    return application


async def retrieve(runtime: Runtime, account_id: str, application_id: str) -> Application:
    async with runtime.sessions() as session:
        return await get_owned(session, account_id, application_id)


async def list_page(
    runtime: Runtime,
    account_id: str,
    *,
    page_number: int,
    page_size: int,
    sort: str,
    name_contains: str | None,
    outbound_voice_profile_id: str | None = None,
) -> Page:
    offset = (page_number - 1) * page_size
    items: Sequence[Application] = []
    async with runtime.sessions() as session:
        total = await repository.count(
            session, account_id, name_contains, outbound_voice_profile_id
        )
        # a page past the end is empty; asking the database would overflow its 64-bit OFFSET
        # for absurd page numbers
        if offset < total:
            items = await repository.page(
                session,
                account_id,
                offset=offset,
                limit=page_size,
                sort=sort,
                name_contains=name_contains,
                outbound_voice_profile_id=outbound_voice_profile_id,
            )
    return Page(items, page_number, page_size, total)


async def update(
    runtime: Runtime,
    account_id: str,
    application_id: str,
    request: UpdateCallControlApplicationRequest,
) -> Application:
    changes = request.changes()
    async with runtime.sessions() as session:
        await get_owned(session, account_id, application_id)  # 404 before any address lookup
    await check_webhook_urls(
        {name: changes.get(name) for name in URL_FIELDS},
        allow_private=runtime.settings.allow_private_networks,
    )
    async with transaction(runtime.sessions) as session:
        application = await get_owned(session, account_id, application_id)
        await check_encryption_key(session, account_id, changes.get("recording_encryption_key_id"))
        for name, value in changes.items():
            setattr(application, name, value)
        application.updated_at = utcnow()
        await session.flush()
    return application


async def delete(runtime: Runtime, account_id: str, application_id: str) -> Application:
    async with transaction(runtime.sessions) as session:
        application = await get_owned(session, account_id, application_id)
        await repository.delete(session, application)
    return application
