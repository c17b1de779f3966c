"""The worker's held credentials (credentials/held.py), on SQLite and PostgreSQL: on SQLite an
upload after the first reads no credentials row while nothing changed, and any change — by
another process, by a cascade, or committed while the row was being read — is used at once;
on PostgreSQL every upload reads the row."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from callvault.accounts.service import NewAccount
from callvault.credentials import held as held_module
from callvault.credentials.held import HeldCredentials
from callvault.credentials.service import StoredCredentials
from callvault.generation import generation_reader
from callvault.runtime import Runtime
from tests.conftest import auth
from tests.credentials.helpers import BASE, counting, other_process_engine, saved
from tests.credentials.samples import body
from tests.servers import ServiceAccount


async def load(runtime: Runtime, held: HeldCredentials, connection_id: str) -> Any:
    async with runtime.sessions() as session:
        return await held.load(session, connection_id)


def bucket(credentials: StoredCredentials | None) -> str | None:
    return None if credentials is None else str(credentials.configuration["bucket"])


async def test_credentials_are_read_once_per_generation(
    api: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
) -> None:
    sent = await saved(api, account, connection_id, gcs_service_account)
    held = HeldCredentials(generation_reader(runtime), runtime.settings.keyring)
    first = await load(runtime, held, connection_id)
    assert bucket(first) == sent["configuration"]["bucket"]
    on_loop = generation_reader(runtime).loop_reader is not None

    with counting(runtime) as counter:
        again = await load(runtime, held, connection_id)
    assert bucket(again) == sent["configuration"]["bucket"]
    reads = [sql for sql in counter.statements if "storage_credentials" in sql]
    assert len(reads) == (0 if on_loop else 1), counter.statements

    replacement = body("s3", gcs_service_account)
    url = f"{BASE}/{connection_id}"
    response = await other_process.put(url, json=replacement, headers=auth(account))
    assert response.status_code == 200, response.text
    replaced = replacement["configuration"]["bucket"]
    assert bucket(await load(runtime, held, connection_id)) == replaced

    # the application deleted from another connection: its credentials go by ON DELETE CASCADE
    async with other_process_engine(runtime) as connection:
        await connection.execute(
            text("DELETE FROM applications WHERE id = :id"), {"id": connection_id}
        )
    assert await load(runtime, held, connection_id) is None


async def test_a_change_committed_while_reading_is_used_next_time(
    api: httpx.AsyncClient,
    other_process: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process replaces the credentials right after this load read the row: what was
    read is held under the generation read before the row, so the next load reads again."""
    sent = await saved(api, account, connection_id, gcs_service_account)
    replacement = body("s3", gcs_service_account)
    original = held_module.load_configuration

    async def load_then_replace(*args: Any) -> StoredCredentials | None:
        credentials = await original(*args)
        monkeypatch.setattr(held_module, "load_configuration", original)
        url = f"{BASE}/{connection_id}"
        put = await other_process.put(url, json=replacement, headers=auth(account))
        assert put.status_code == 200, put.text
        return credentials

    monkeypatch.setattr(held_module, "load_configuration", load_then_replace)
    held = HeldCredentials(generation_reader(runtime), runtime.settings.keyring)
    assert bucket(await load(runtime, held, connection_id)) == sent["configuration"]["bucket"]
    replaced = replacement["configuration"]["bucket"]
    assert bucket(await load(runtime, held, connection_id)) == replaced


async def test_held_connections_are_bounded(
    api: httpx.AsyncClient,
    account: NewAccount,
    connection_id: str,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
) -> None:
    """The least recently used connection goes first: read again when asked for again."""
    await saved(api, account, connection_id, gcs_service_account)
    held = HeldCredentials(generation_reader(runtime), runtime.settings.keyring, size=2)
    assert bucket(await load(runtime, held, connection_id)) is not None
    for other in ("1", "2"):  # connections without credentials: held as None
        assert await load(runtime, held, other) is None
    with counting(runtime) as counter:
        assert await load(runtime, held, "2") is None
        assert bucket(await load(runtime, held, connection_id)) is not None
    reads = [sql for sql in counter.statements if "storage_credentials" in sql]
    on_loop = generation_reader(runtime).loop_reader is not None
    assert len(reads) == (1 if on_loop else 2), counter.statements
