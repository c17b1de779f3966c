"""What authenticating a `/v2` request costs once its API key is cached: `GET
/v2/webhook_signing_key` in-process (ASGI, no network), sequential and 32 at a time, on a fresh
database. Since keys can be revoked (issue 21) a cached key is checked against the credentials
generation (accounts/cache.py); this shows that check costs no round trip per request.

    .venv/bin/python bench/auth_cache.py [--database sqlite|postgresql] [--n 3000]

PostgreSQL: a fresh database on CALLVAULT_TEST_POSTGRES (default the suite's
postgresql://postgres@127.0.0.1:5432/postgres), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import tempfile
import time
import uuid

import asyncpg
import httpx

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.config import load_settings
from callvault.db import migrate, transaction
from callvault.runtime import Runtime

ADMIN = os.environ.get("CALLVAULT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PATH = "/v2/webhook_signing_key"


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def measure(database: str, n: int) -> None:
    data_dir = tempfile.mkdtemp(prefix="callvault-bench-")
    name = f"callvault_bench_{uuid.uuid4().hex[:8]}"
    if database == "postgresql":
        await _admin(f'CREATE DATABASE "{name}"')
        url = f"{ADMIN.rsplit('/', 1)[0]}/{name}"
    else:
        url = f"sqlite:///{data_dir}/bench.db"
    try:
        await asyncio.to_thread(migrate, url)
        settings = load_settings(
            {
                "CALLVAULT_DATA_DIR": data_dir,
                "CALLVAULT_DATABASE_URL": url,
                "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
                "CALLVAULT_INGEST_TOKEN": secrets.token_urlsafe(16),
            }
        )
        runtime = Runtime.build(settings)
        async with transaction(runtime.sessions) as session:
            account = await create_account(session, settings.keyring, "bench")
        headers = {"Authorization": f"Bearer {account.api_key}"}
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(200):  # the key cached, the last use written
                assert (await client.get(PATH, headers=headers)).status_code == 200
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await client.get(PATH, headers=headers)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{database} sequential: {wall / n * 1e6:.0f} us wall, "
                f"{cpu / n * 1e6:.0f} us CPU per request"
            )
            rounds = n // 32
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(rounds):
                await asyncio.gather(*(client.get(PATH, headers=headers) for _ in range(32)))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{database} 32 at a time: {rounds * 32 / wall:.0f} requests/s, "
                f"{cpu / (rounds * 32) * 1e6:.0f} us CPU per request"
            )
        await runtime.close()
    finally:
        if database == "postgresql":
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(measure(args.database, args.n))


if __name__ == "__main__":
    main()
