"""Configuration mistakes stop `serve` and `worker` at start, with one line naming the fix
(issue 26): on PostgreSQL without CALLVAULT_ENCRYPTION_KEYS, with keys that do not open the
stored data (in every mode), with migrations pending; `migrate` says what it applied.

Each runs the real `callvault` command in a subprocess and needs no server to answer: a
refusal ends the process within seconds."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from callvault.crypto import key_id_for
from callvault.db import head_revision
from tests.conftest import POSTGRES_ADMIN_DSN, _admin
from tests.faults.cluster import clean_environment

CALLVAULT = [sys.executable, "-m", "callvault"]


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def run(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALLVAULT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line a refusal prints (asserted: non-zero exit, no traceback, `words` in it)."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("callvault: ")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database without migrations, dropped afterwards."""
    name = f"callvault_startup_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def scaled_out(tmp_path: Path, database_url: str, **values: str) -> dict[str, str]:
    """A scaled-out process's environment: PostgreSQL, everything else set."""
    return clean_environment(
        CALLVAULT_DATA_DIR=str(tmp_path / "data"),
        CALLVAULT_DATABASE_URL=database_url,
        CALLVAULT_DEFAULT_STORE=f"file://{tmp_path / 'store'}",
        CALLVAULT_INGEST_TOKEN="ingest-" + secrets.token_urlsafe(16),
        **values,
    )


def test_no_keys_on_postgresql_refused(tmp_path: Path, postgres_database: str) -> None:
    env = scaled_out(tmp_path, postgres_database)
    for command in (["worker"], ["serve", "--no-worker"]):
        line = refused(run(env, *command), "CALLVAULT_ENCRYPTION_KEYS")
        assert "callvault keys generate" in line
    assert not (tmp_path / "data").exists()  # no key invented, no data dir made


def test_pending_migrations_and_keys_that_do_not_open_the_data_refused(
    tmp_path: Path, postgres_database: str
) -> None:
    written_with = new_key()
    env = scaled_out(tmp_path, postgres_database, CALLVAULT_ENCRYPTION_KEYS=written_with)
    for command in (["worker"], ["serve", "--no-worker"]):
        refused(run(env, *command), "pending migration", "callvault migrate", head_revision())

    migrated = run(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    # the revisions it applied, oldest first, and the one the database is at
    lines = migrated.stdout.splitlines()
    assert lines[0].startswith("applied 0001")
    assert lines[-1] == f"database at {head_revision()}"

    created = run(env, "accounts", "create", "sealed", "--json")
    assert created.returncode == 0, created.stderr
    key_id = key_id_for(base64.b64decode(written_with))
    other = {**env, "CALLVAULT_ENCRYPTION_KEYS": new_key()}
    for command in (["worker"], ["serve", "--no-worker"]):
        refused(run(other, *command), f"key id {key_id}", "CALLVAULT_ENCRYPTION_KEYS")


def test_embedded_data_dir_without_its_key_refused(tmp_path: Path) -> None:
    """Embedded mode after a rotation, with CALLVAULT_ENCRYPTION_KEYS dropped: the generated
    key file does not open the data, and the worker says so instead of failing every job."""
    env = clean_environment(CALLVAULT_DATA_DIR=str(tmp_path / "data"))
    rotated = {**env, "CALLVAULT_ENCRYPTION_KEYS": new_key()}
    assert run(rotated, "accounts", "create", "sealed").returncode == 0
    refused(run(env, "worker"), "does not hold", "CALLVAULT_ENCRYPTION_KEYS")
