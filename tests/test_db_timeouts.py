"""PostgreSQL statements are bounded: a database that stops answering cannot hold a job forever."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from callvault import db


async def test_statements_time_out(postgresql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert db.COMMAND_TIMEOUT_SECS <= 60
    monkeypatch.setattr(db, "COMMAND_TIMEOUT_SECS", 0.5)
    engine = db.make_engine(postgresql_url)
    try:
        async with engine.connect() as connection:
            started = asyncio.get_running_loop().time()
            with pytest.raises((DBAPIError, TimeoutError)):
                await connection.execute(text("SELECT pg_sleep(20)"))
            assert asyncio.get_running_loop().time() - started < 10
    finally:
        await engine.dispose()
