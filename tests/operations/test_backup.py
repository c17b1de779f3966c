"""`callvault backup` while `serve` runs and ingest goes on, then `callvault restore` into a new
data dir and a new `serve` on it: every recording acknowledged before the backup started is
listed, and the work that was pending (uploads to the customer's bucket, webhooks that the
receiver refused so far) is finished by the restored instance."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.faults.cluster import (
    CALLVAULT,
    Processes,
    Sent,
    clean_environment,
    ingest_paced,
    list_bucket,
    run_cli,
    verify_signature,
)
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, ingest_metadata, s3_generic, set_credentials

RECORDINGS = 40
CONVERGE_WITHIN = 60.0


def refused(env: dict[str, str], *args: str) -> str:
    """`callvault ARGS…` must exit 2; its message on one line (the console wraps it)."""
    done = subprocess.run(
        [str(CALLVAULT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    return " ".join(done.stderr.split())


async def test_backup_under_ingest_restores_every_acknowledged_recording(
    tmp_path: Path, seaweedfs: SeaweedFS
) -> None:
    bucket = f"backup-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(bucket)
    data_dir = tmp_path / "data"
    env = clean_environment(
        CALLVAULT_DATA_DIR=str(data_dir),
        # many quick retries: the refused webhooks are still pending when the backup is taken
        CALLVAULT_WEBHOOK_SCHEDULE=",".join(["0.5"] + ["2"] * 40),
    )
    account = json.loads(run_cli(env, "accounts", "create", "backup", "--json"))
    ingest_token = (data_dir / "ingest.token").read_text().strip()
    headers = {"Authorization": f"Bearer {account['api_key']}"}
    backup_dir = tmp_path / "backup"
    restored_dir = tmp_path / "restored"

    with WebhookReceiver() as receiver, Processes(tmp_path / "logs") as processes:
        receiver.answer(503, seconds=3600)  # every webhook stays pending in the original
        serve = processes.api("serve", env).start().wait_ready()
        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=30) as client:
            connection_id = await create_application(client, account["api_key"], receiver.url())
            await set_credentials(
                client,
                account["api_key"],
                connection_id,
                "s3-generic",
                s3_generic(seaweedfs, bucket),
            )

        sent = [Sent(ingest_metadata(connection_id), noise_wav(0.5)) for _ in range(RECORDINGS)]

        async def back_up() -> set[str]:
            while sum(bool(s.recording_id) for s in sent) < RECORDINGS // 3:  # noqa: ASYNC110 (the ingest task fills it)
                await asyncio.sleep(0.02)
            acknowledged = {s.recording_id for s in sent if s.recording_id}
            await asyncio.to_thread(run_cli, env, "backup", str(backup_dir))
            return acknowledged

        _, acknowledged = await asyncio.gather(
            ingest_paced(serve.url, ingest_token, sent, every=0.15, concurrency=2), back_up()
        )
        assert sum(bool(s.recording_id) for s in sent) == RECORDINGS
        serve.terminate()

        # what the backup holds: the secrets with their modes, a self-contained database
        for name in ("encryption.key", "ingest.token", "callvault.db"):
            assert stat.S_IMODE((backup_dir / name).stat().st_mode) == 0o600, name
            assert (backup_dir / name).exists()
        assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
        assert not (backup_dir / "callvault.db-wal").exists()
        manifest = json.loads((backup_dir / "manifest.json").read_text())
        assert manifest["missing_objects"] == []
        assert manifest["recordings"] >= len(acknowledged)
        database = sqlite3.connect(backup_dir / "callvault.db")
        pending = database.execute(
            "SELECT count(*) FROM webhook_events WHERE status = 'pending'"
        ).fetchone()[0]
        database.close()
        assert pending > 0  # work the restored instance must finish

        # restore refuses a data dir that exists and is not empty, and a non-backup
        restore_env = {k: v for k, v in env.items() if k != "CALLVAULT_DATA_DIR"}
        assert "not empty" in refused(
            restore_env, "restore", str(backup_dir), "--data-dir", str(data_dir)
        )
        assert "not a callvault backup" in refused(
            restore_env, "restore", str(tmp_path / "logs"), "--data-dir", str(restored_dir)
        )
        run_cli(restore_env, "restore", str(backup_dir), "--data-dir", str(restored_dir))
        assert stat.S_IMODE((restored_dir / "encryption.key").stat().st_mode) == 0o600
        restored_db = sqlite3.connect(restored_dir / "callvault.db")
        leased = restored_db.execute(
            "SELECT (SELECT count(*) FROM recordings WHERE lease_owner IS NOT NULL)"
            " + (SELECT count(*) FROM webhook_events WHERE lease_owner IS NOT NULL)"
        ).fetchone()[0]
        restored_db.close()
        assert leased == 0  # the original's leases released: the restored one starts at once
        assert (restored_dir / "ingest.token").read_text() == (
            data_dir / "ingest.token"
        ).read_text()

        receiver.recover()
        restored_env = {**env, "CALLVAULT_DATA_DIR": str(restored_dir)}
        again = processes.api("restored", restored_env).start().wait_ready()
        async with httpx.AsyncClient(base_url=again.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + CONVERGE_WITHIN
            while True:
                listed = await client.get("/v2/recordings", params={"page[size]": 250})
                assert listed.status_code == 200, listed.text
                states = {r["id"]: r for r in listed.json()["data"]}
                assert acknowledged <= states.keys()
                saved = {
                    d.payload["recording_id"]
                    for d in receiver.received()
                    if d.answered == 200 and d.event_type == "call.recording.saved"
                }
                in_backup = set(states)
                if (
                    all(states[r]["storage"]["location"] == "custom" for r in in_backup)
                    and in_backup <= saved
                ):
                    break
                assert time.monotonic() < deadline, (
                    f"restored instance did not finish: {len(saved)}/{len(in_backup)} saved\n"
                    f"{processes.logs()}"
                )
                await asyncio.sleep(0.3)
            # every restored recording downloads: from the customer's bucket, by its link
            objects = await list_bucket(seaweedfs, bucket)
            assert len(objects) >= len(in_backup)
            by_id = {s.recording_id: s.audio for s in sent}
            for recording_id in sorted(acknowledged)[:3]:
                link = states[recording_id]["download_urls"]["wav"]
                async with httpx.AsyncClient(timeout=30) as plain:
                    downloaded = await plain.get(link)
                assert downloaded.status_code == 200
                assert downloaded.content == by_id[recording_id]
            for delivery in receiver.received():
                if delivery.answered == 200:
                    verify_signature(delivery, account["webhook_public_key"])
        again.terminate()


def test_backup_refuses_a_non_empty_destination_and_the_scaled_out_mode(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_environment(CALLVAULT_DATA_DIR=str(data_dir))
    run_cli(env, "migrate")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    assert "not empty" in refused(env, "backup", str(taken))
    scaled = {**env, "CALLVAULT_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    assert "pg_dump" in refused(scaled, "backup", str(tmp_path / "new"))
    missing = {**env, "CALLVAULT_DATA_DIR": str(tmp_path / "nowhere")}
    assert "no data dir" in refused(missing, "backup", str(tmp_path / "new"))
    assert not (tmp_path / "nowhere").exists()
