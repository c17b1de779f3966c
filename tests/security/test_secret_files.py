"""Files in the data dir that hold keys or the database are readable by their owner only."""

from __future__ import annotations

import asyncio
import os
import stat

from callvault.accounts.service import create_account
from callvault.config import load_settings
from callvault.db import make_engine, make_sessionmaker, migrate, transaction


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generated_secrets_database_and_its_wal_files_are_owner_only(tmp_path):
    old_umask = os.umask(0o022)  # a usual umask: without care, files would be 0644
    try:
        data_dir = tmp_path / "data"
        settings = load_settings({"CALLVAULT_DATA_DIR": str(data_dir)})
        migrate(settings.database_url)

        async def write_rows() -> None:
            engine = make_engine(settings.database_url)
            try:
                async with transaction(make_sessionmaker(engine)) as session:
                    await create_account(session, settings.keyring, "modes")
                # the -wal and -shm files exist while a connection is open: check them now
                for suffix in ("-wal", "-shm"):
                    path = data_dir / f"callvault.db{suffix}"
                    assert path.exists(), f"{path.name} was not created"
                    assert mode(path) == 0o600, f"{path.name} is {oct(mode(path))}"
            finally:
                await engine.dispose()

        asyncio.run(write_rows())
    finally:
        os.umask(old_umask)

    assert mode(data_dir) == 0o700
    for name in ("encryption.key", "ingest.token", "callvault.db"):
        assert mode(data_dir / name) == 0o600, f"{name} is {oct(mode(data_dir / name))}"


def test_an_existing_world_readable_data_dir_is_closed_again(tmp_path):
    data_dir = tmp_path / "open"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    load_settings({"CALLVAULT_DATA_DIR": str(data_dir)})
    assert mode(data_dir) == 0o700
