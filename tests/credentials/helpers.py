"""What the credentials cache tests share: a statement counter, credentials saved over the API,
a write from another engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from callvault.accounts.service import NewAccount
from callvault.db import make_engine
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.credentials.samples import body
from tests.servers import ServiceAccount

BASE = "/v2/custom_storage_credentials"


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)


@contextmanager
def counting(runtime: Runtime) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", counter)


async def saved(
    api: httpx.AsyncClient, account: NewAccount, connection_id: str, sa: ServiceAccount
) -> dict[str, Any]:
    sent = body("s3", sa)
    response = await api.post(f"{BASE}/{connection_id}", json=sent, headers=auth(account))
    assert response.status_code == 200, response.text  # Telnyx answers a create with 200
    return sent


@asynccontextmanager
async def other_process_engine(runtime: Runtime) -> AsyncIterator[AsyncConnection]:
    """A write transaction on a fresh engine of the same database (not this runtime's pool)."""
    engine = make_engine(runtime.settings.database_url)
    try:
        async with engine.begin() as connection:
            yield connection
    finally:
        await engine.dispose()
