"""Upgrades that lose nothing (issue 25).

- The first release's data (0.1.0, made by its own code: tests/operations/make_v1_fixture.py)
  goes to head with `callvault migrate`, on SQLite and on PostgreSQL (its pg_dump loaded with
  psql). Then the current `callvault serve` finishes what was pending (received recordings, a
  pending webhook), leaves what was final as it was (stored, failed, deleted, a webhook that
  gave up), lists every recording as 0.1.0 did, and every download link gives the bytes.
- Rolling upgrade on PostgreSQL: the previous landed version's `worker` (PREVIOUS, run from its
  own source with `git archive`) completes recordings on a database already migrated to head,
  next to the new API.

"head" is whatever this tree's migrations end at, never a fixed revision.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import obstore
import pytest
from alembic.script import ScriptDirectory

from callvault.db import alembic_config
from tests.faults.cluster import (
    Processes,
    Sent,
    clean_environment,
    fresh_database,
    ingest_paced,
    list_bucket,
    query,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.operations.make_v1_fixture import FIXTURE, RECEIVER_PORT, unpack
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, ingest_metadata, s3_generic, set_credentials

# the previous landed version (main before this branch); bump it at each release
PREVIOUS = "004028b"
CONVERGE_WITHIN = 60.0
# fields a listing shows that change by themselves (signed links, touch times)
VOLATILE = {"download_urls", "updated_at"}


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


@dataclass
class Upgraded:
    env: dict[str, str]
    facts: dict[str, Any]
    s3: SeaweedFS
    revision: str


async def put_customer_objects(s3: SeaweedFS, bucket: str, source: Path) -> None:
    """The customer's bucket as 0.1.0 left it (theirs: it survives any callvault upgrade)."""
    from tests.faults.cluster import bucket_store

    s3.create_bucket(bucket)
    store = bucket_store(s3, bucket)
    for path in [p for p in source.rglob("*") if p.is_file()]:  # noqa: ASYNC240 (a few small files)
        await obstore.put_async(store, path.relative_to(source).as_posix(), path.read_bytes())


def copy_store(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    os.chmod(target, 0o700)


@pytest.fixture(params=["sqlite", "postgresql"])
async def upgraded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Upgraded]:
    variant = str(request.param)
    fixture = FIXTURE / variant
    facts = json.loads((fixture / "facts.json").read_text())
    with SeaweedFS(tmp_path / "s3") as s3:
        await put_customer_objects(s3, facts["bucket"], fixture / "bucket")
        data_dir = tmp_path / "data"
        if variant == "sqlite":
            data_dir.mkdir(mode=0o700)
            for name in ("callvault.db", "encryption.key", "ingest.token"):
                shutil.copy(fixture / name, data_dir / name)
                os.chmod(data_dir / name, 0o600)
            copy_store(fixture / "recordings", data_dir / "recordings")
            env = clean_environment(CALLVAULT_DATA_DIR=str(data_dir), AWS_ENDPOINT_URL=s3.endpoint)
            yield await migrated(env, facts, s3, database_url=None)
            return
        async with fresh_database() as database_url:
            loaded = await asyncio.to_thread(
                subprocess.run,
                [
                    "psql",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-f",
                    str(fixture / "dump.sql"),
                    database_url,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert loaded.returncode == 0, loaded.stderr
            data_dir.mkdir(mode=0o700)
            copy_store(fixture / "recordings", data_dir / "recordings")
            env = clean_environment(
                CALLVAULT_DATA_DIR=str(data_dir),
                AWS_ENDPOINT_URL=s3.endpoint,
                CALLVAULT_DATABASE_URL=database_url,
                CALLVAULT_ENCRYPTION_KEYS=facts["encryption_keys"],
                CALLVAULT_INGEST_TOKEN=facts["ingest_token"],
                CALLVAULT_DEFAULT_STORE=f"file://{data_dir / 'recordings'}",
            )
            yield await migrated(env, facts, s3, database_url=database_url)


async def migrated(
    env: dict[str, str], facts: dict[str, Any], s3: SeaweedFS, database_url: str | None
) -> Upgraded:
    run_cli(env, "migrate")
    if database_url is None:
        import sqlite3

        connection = sqlite3.connect(Path(env["CALLVAULT_DATA_DIR"]) / "callvault.db")
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        connection.close()
    else:
        revision = (await query(database_url, "SELECT version_num FROM alembic_version"))[0][0]
    return Upgraded(env, facts, s3, revision)


def comparable(recording: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in recording.items() if k not in VOLATILE}


def as_before(old: Any, new: Any) -> Any:
    """`new` cut to the shape of `old`: head may add fields, at any depth, never change one."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: as_before(v, new.get(k)) for k, v in old.items()}
    return new


async def test_first_release_data_migrates_to_head_and_completes(
    upgraded: Upgraded, tmp_path: Path
) -> None:
    assert {upgraded.revision} == head_revisions()
    facts = upgraded.facts
    states: dict[str, list[str]] = facts["states"]
    before = {r["id"]: r for r in facts["listing"]}
    headers = {"Authorization": f"Bearer {facts['account']['api_key']}"}
    public_key = facts["account"]["webhook_public_key"]

    with (
        WebhookReceiver(bind_port=RECEIVER_PORT) as receiver,
        Processes(tmp_path / "logs") as processes,
    ):
        serve = processes.api("serve", upgraded.env).start().wait_ready()
        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + CONVERGE_WITHIN
            while True:
                listed = await client.get("/v2/recordings", params={"page[size]": 250})
                assert listed.status_code == 200, listed.text
                after = {r["id"]: r for r in listed.json()["data"]}
                done = all(after[r]["storage"]["state"] == "stored" for r in states["received"])
                pending_sent = [d for d in receiver.received("/pending") if d.answered == 200]
                if done and pending_sent:
                    break
                assert time.monotonic() < deadline, (
                    f"not completed: {[after[r]['storage'] for r in states['received']]}, "
                    f"pending webhook sent {len(pending_sent)}\n{processes.logs()}"
                )
                await asyncio.sleep(0.3)

            # listed exactly as before: the same recordings (the deleted one still absent)
            assert after.keys() == before.keys()
            assert not set(states["deleted"]) & after.keys()
            for recording_id, old in before.items():
                new = after[recording_id]
                if recording_id in states["received"]:
                    assert new["storage"]["state"] == "stored"
                    old, new = dict(old), dict(new)
                    old.pop("storage"), new.pop("storage")
                # 0.1.0's fields keep their values; head may only add fields
                assert as_before(comparable(old), new) == comparable(old), recording_id
            custom_received = [
                r
                for r in states["received"]
                if after[r]["connection_id"] == facts["apps"]["custom"]
            ]
            assert [after[r]["storage"]["location"] for r in custom_received] == ["custom"]

            # every download link gives the recording's bytes (default store or customer bucket)
            async with httpx.AsyncClient(timeout=30) as plain:
                for recording_id, recording in after.items():
                    got = await plain.get(recording["download_urls"]["wav"])
                    assert got.status_code == 200, (recording_id, got.text[:300])
                    digest = hashlib.sha256(got.content).hexdigest()
                    assert digest == facts["sha256"][recording_id], recording_id

        # webhooks: the received ones announced, the pending one delivered, all verifiable;
        # the one that gave up was not tried again
        saved = {
            d.payload["recording_id"]
            for d in receiver.received("/ok")
            if d.answered == 200 and d.event_type in ("call.recording.saved", "recording_saved")
        }
        assert set(states["received"]) <= saved
        assert not receiver.received("/gone")
        for delivery in receiver.received():
            verify_signature(delivery, public_key)
        status = json.loads(run_cli(upgraded.env, "status", "--json"))
        assert status["webhook_events"]["failed"] == 1
        assert status["webhook_events"]["pending"] == 0
        assert status["recordings"]["failed"] == len(states["failed"])
        serve.terminate()


async def test_previous_version_worker_completes_on_a_database_at_head(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    """Rolling upgrade: migrate first, then the old worker keeps working beside the new API."""
    previous_src = unpack(PREVIOUS, tmp_path / "previous")
    bucket = f"rolling-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(bucket)
    async with fresh_database() as database_url:
        env = clean_environment(
            CALLVAULT_DATA_DIR=str(tmp_path / "data"),
            CALLVAULT_DATABASE_URL=database_url,
            CALLVAULT_ENCRYPTION_KEYS="".join(["A"] * 43) + "=",
            CALLVAULT_INGEST_TOKEN=secrets.token_urlsafe(16),
            CALLVAULT_DEFAULT_STORE=f"file://{tmp_path / 'store'}",
        )
        run_cli(env, "migrate")
        revision = (await query(database_url, "SELECT version_num FROM alembic_version"))[0][0]
        assert {revision} == head_revisions()
        old_env = {**env, "PYTHONPATH": str(previous_src)}
        imported = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", "import callvault; print(callvault.__file__)"],
            env=old_env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert imported.stdout.strip().startswith(str(previous_src))  # the old code, really
        account = json.loads(run_cli(env, "accounts", "create", "rolling", "--json"))
        headers = {"Authorization": f"Bearer {account['api_key']}"}

        with WebhookReceiver() as receiver, Processes(tmp_path / "logs") as processes:
            api = processes.api("api-new", env, "--no-worker").start().wait_ready()
            old_worker = processes.worker("worker-previous", old_env).start().wait_ready()
            async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as client:
                connection_id = await create_application(client, account["api_key"], receiver.url())
                await set_credentials(
                    client,
                    account["api_key"],
                    connection_id,
                    "s3-generic",
                    s3_generic(seaweedfs, bucket),
                )
            sent = [Sent(ingest_metadata(connection_id), noise_wav(0.3)) for _ in range(8)]
            await ingest_paced(
                api.url, env["CALLVAULT_INGEST_TOKEN"], sent, every=0.1, concurrency=4
            )
            ids = {s.recording_id for s in sent}
            saved = await receiver.wait_for(
                len(ids),
                within=CONVERGE_WITHIN,
                where=lambda d: d.event_type == "call.recording.saved",
            )
            assert {d.payload["recording_id"] for d in saved} == ids
            for delivery in saved:
                verify_signature(delivery, account["webhook_public_key"])
            objects = await list_bucket(seaweedfs, bucket)
            assert len(objects) == len(ids)
            assert sorted(objects.values()) == sorted(len(s.audio) for s in sent)
            assert old_worker.running, processes.logs()
            rows = await query(database_url, "SELECT status FROM recordings")
            assert {r["status"] for r in rows} == {"stored"}
