import asyncio
import base64
import json
import os
import subprocess
import sys

from callvault.accounts import keys
from callvault.accounts.service import authenticate
from callvault.db import make_engine, make_sessionmaker


def test_create_json_prints_one_object_and_stores_only_a_hash(tmp_path):
    env = {**os.environ, "CALLVAULT_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "callvault", "accounts", "create", "Acme", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    created = json.loads(out)
    assert set(created) == {"account_id", "api_key", "webhook_public_key"}
    assert len(base64.b64decode(created["webhook_public_key"])) == 32
    raw = (tmp_path / "callvault.db").read_bytes()
    assert created["api_key"].encode() not in raw
    assert keys.hash_api_key(created["api_key"]).encode() in raw

    async def check() -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'callvault.db'}")
        async with make_sessionmaker(engine)() as session:
            found = await authenticate(session, created["api_key"])
            assert found is not None and found.id == created["account_id"]
            assert await authenticate(session, created["api_key"] + "x") is None
        await engine.dispose()

    asyncio.run(check())
