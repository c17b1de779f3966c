"""Fixtures of the credentials tests: an application to store for, and a second process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.runtime import Runtime
from tests.applications.helpers import create_application


@pytest.fixture
async def connection_id(api: httpx.AsyncClient, account: NewAccount) -> str:
    return str((await create_application(api, account))["id"])


@pytest.fixture
async def other_process(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API of a second process on the same database: its own runtime, engine, connections
    and caches (what a second `serve` behind the load balancer is)."""
    other = Runtime.build(runtime.settings)
    transport = httpx.ASGITransport(app=create_app(other), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://other.test") as client:
        yield client
    await other.close()
