"""The hand-off's tests share one callvault on SQLite (the hand-off talks HTTP to it, the
database behind does not matter here): an account, and a `callvault serve` the tests stop and
start again to play "callvault is down"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import NewAccount, create_account
from callvault.config import Settings
from callvault.db import transaction
from callvault.runtime import Runtime
from tests.conftest import LiveServer, make_settings
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, store_in_new_bucket


@pytest.fixture(scope="module")
def handoff_settings(
    tmp_path_factory: pytest.TempPathFactory, fresh_sqlite: Callable[[Path], str]
) -> Settings:
    data_dir = tmp_path_factory.mktemp("handoff-data")
    return make_settings(data_dir, fresh_sqlite(data_dir / "db"))


@pytest.fixture
async def handoff_account(handoff_settings: Settings) -> NewAccount:
    runtime = Runtime.build(handoff_settings)
    try:
        async with transaction(runtime.sessions) as session:
            return await create_account(session, runtime.settings.keyring, "hand-off")
    finally:
        await runtime.close()


@pytest.fixture
def callvault(handoff_settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(handoff_settings).start()
    yield server
    server.stop()


@dataclass
class Connection:
    id: str
    account: NewAccount
    bucket_config: dict[str, str]


@pytest.fixture
async def connection(
    callvault: LiveServer,
    handoff_account: NewAccount,
    webhook_receiver: WebhookReceiver,
    seaweedfs: SeaweedFS,
) -> AsyncIterator[Connection]:
    """An application whose recordings go to a new SeaweedFS bucket (custom storage)."""
    async with httpx.AsyncClient(base_url=callvault.url, timeout=10) as client:
        connection_id = await create_application(
            client, handoff_account.api_key, webhook_receiver.url()
        )
        config = await store_in_new_bucket(
            client, handoff_account.api_key, connection_id, seaweedfs
        )
    yield Connection(connection_id, handoff_account, config)


def handoff_command(*args: str | Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "callvault", "handoff", *(str(a) for a in args)]
