"""`callvault keys rotate`: every sealed value moves to the active key, so the old key can go.

Runs on a database of its own: rotation touches every row, and the rest of the suite's rows are
sealed with the session's key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from callvault.accounts.models import Account
from callvault.accounts.service import create_account, signing_key
from callvault.app import create_app
from callvault.config import load_settings
from callvault.credentials.models import StorageCredentials
from callvault.credentials.rotation import rotate_all
from callvault.credentials.service import load_configuration
from callvault.crypto import key_id_for
from callvault.db import transaction
from callvault.runtime import Runtime
from callvault.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.credentials.samples import BACKENDS, body


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def runtime_with(keys: list[str], database_url: str, data_dir: Path) -> Runtime:
    return Runtime.build(
        load_settings(
            {
                "CALLVAULT_DATA_DIR": str(data_dir),
                "CALLVAULT_DATABASE_URL": database_url,
                "CALLVAULT_ENCRYPTION_KEYS": ",".join(keys),
                "CALLVAULT_INGEST_TOKEN": "t" * 32,
                "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
            }
        )
    )


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://callvault.test")


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callvault",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def sealed_values(runtime: Runtime) -> list[str]:
    async with runtime.sessions() as session:
        values = list(await session.scalars(select(StorageCredentials.configuration_sealed)))
        values += list(await session.scalars(select(Account.webhook_private_key_sealed)))
    return values


async def test_rotate_then_drop_the_old_key(fresh_database_url, tmp_path, gcs_service_account):
    old, new = new_key(), new_key()
    before = runtime_with([old], fresh_database_url, tmp_path)
    async with transaction(before.sessions) as session:
        account = await create_account(session, before.settings.keyring, "rotation")
    shown: dict[str, dict] = {}
    async with client_for(before) as api:
        for backend in BACKENDS:
            connection_id = (await create_application(api, account))["id"]
            sent = body(backend, gcs_service_account)
            response = await api.post(
                f"/v2/custom_storage_credentials/{connection_id}", json=sent, headers=auth(account)
            )
            assert response.status_code == 200, response.text
            shown[connection_id] = response.json()
    async with before.sessions() as session:
        configurations = {
            cid: (await load_configuration(session, before.settings.keyring, cid)).configuration
            for cid in shown
        }
        updated_before = {
            row.connection_id: row.updated_at
            for row in await session.scalars(select(StorageCredentials))
        }
    await before.close()

    env = {
        "CALLVAULT_DATA_DIR": str(tmp_path),
        "CALLVAULT_DATABASE_URL": fresh_database_url,
        "CALLVAULT_ENCRYPTION_KEYS": f"{new},{old}",
    }
    code, output = await run_cli("keys", "rotate", "--batch-size", "2", env=env)
    assert code == 0, output
    assert "re-encrypted 5" in output  # 4 configurations + 1 signing key
    for secret in (old, new):
        assert secret not in output

    after = runtime_with([new], fresh_database_url, tmp_path)
    try:
        new_id = key_id_for(base64.b64decode(new))
        values = await sealed_values(after)
        assert len(values) == 5 and all(v.startswith(f"{new_id}:") for v in values)

        async with after.sessions() as session:
            for cid, configuration in configurations.items():
                loaded = await load_configuration(session, after.settings.keyring, cid)
                assert loaded is not None and loaded.configuration == configuration
            rows = await session.scalars(select(StorageCredentials))
            # rotation is not an edit: updated_at stays
            assert {row.connection_id: row.updated_at for row in rows} == updated_before
            stored_account = await session.get(Account, account.account_id)
        async with client_for(after) as api:
            for cid, response in shown.items():
                again = await api.get(
                    f"/v2/custom_storage_credentials/{cid}", headers=auth(account)
                )
                assert again.status_code == 200
                assert again.json() == response

        # the signing key opens under the new key alone and still matches the published key
        key = signing_key(stored_account, after.settings.keyring)
        payload = '{"data": {"event_type": "call.recording.saved"}}'
        headers = signed_headers(key, int(time.time()), payload)
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(account.webhook_public_key))
        public.verify(
            base64.b64decode(headers[SIGNATURE_HEADER]),
            f"{headers[TIMESTAMP_HEADER]}|{payload}".encode(),
        )

        # a second run finds nothing to do
        report = await rotate_all(after.sessions, after.settings.keyring)
        assert (report.rotated, report.already_current) == (0, 5)
    finally:
        await after.close()


async def test_a_value_no_configured_key_opens_is_reported_and_left_alone(
    fresh_database_url, tmp_path
):
    lost, current = new_key(), new_key()
    runtime = runtime_with([lost], fresh_database_url, tmp_path)
    async with transaction(runtime.sessions) as session:
        await create_account(session, runtime.settings.keyring, "sealed with a lost key")
    before = await sealed_values(runtime)
    await runtime.close()

    env = {
        "CALLVAULT_DATA_DIR": str(tmp_path),
        "CALLVAULT_DATABASE_URL": fresh_database_url,
        "CALLVAULT_ENCRYPTION_KEYS": current,
    }
    code, output = await run_cli("keys", "rotate", env=env)
    assert code == 1
    assert "cannot decrypt webhook signing keys" in output
    runtime = runtime_with([current], fresh_database_url, tmp_path)
    try:
        assert await sealed_values(runtime) == before
    finally:
        await runtime.close()
