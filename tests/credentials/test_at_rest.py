"""Secrets never reach the database in clear: read the raw SQLite file bytes, and every
PostgreSQL row as text."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sqlalchemy import text

from callvault.accounts.service import NewAccount
from callvault.db import Base
from callvault.migrations import load_all_models
from callvault.runtime import Runtime
from tests.applications.helpers import create_application
from tests.conftest import auth
from tests.credentials.samples import BACKENDS, body
from tests.servers import ServiceAccount


async def database_text(runtime: Runtime) -> bytes:
    url = runtime.settings.database_url
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        # committed pages may still sit in the write-ahead log
        return b"".join(
            candidate.read_bytes()
            for candidate in (path, Path(f"{path}-wal"))
            if candidate.exists()
        )
    load_all_models()
    chunks = []
    async with runtime.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(text(f'SELECT t::text FROM "{table.name}" t'))
            chunks += [row[0] for row in rows]
    return "\n".join(chunks).encode()


async def test_no_secret_is_stored_in_clear(
    api: httpx.AsyncClient,
    account: NewAccount,
    runtime: Runtime,
    gcs_service_account: ServiceAccount,
) -> None:
    secrets: list[str] = []
    buckets: list[str] = []
    for backend in BACKENDS:
        connection_id = (await create_application(api, account))["id"]
        sent = body(backend, gcs_service_account)
        configuration = sent["configuration"]
        response = await api.post(
            f"/v2/custom_storage_credentials/{connection_id}", json=sent, headers=auth(account)
        )
        assert response.status_code == 200
        buckets.append(configuration["bucket"])
        if backend == "gcs":
            key = json.loads(configuration["credentials"])
            secrets += [configuration["credentials"], key["private_key_id"]]
            # the PEM body, line by line (a JSON dump escapes its newlines)
            secrets += [line for line in key["private_key"].splitlines() if len(line) > 40]
        elif backend == "azure":
            secrets.append(configuration["account_key"])
        else:
            secrets.append(configuration["aws_secret_access_key"])

    stored = await database_text(runtime)
    # the check reads the real rows: what is not secret is there in clear
    assert b"hooks.example.com" in stored
    for secret in secrets:
        assert secret.encode() not in stored
    # the whole configuration is sealed, not only the secrets
    for bucket in buckets:
        assert bucket.encode() not in stored
