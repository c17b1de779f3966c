"""Make tests/operations/fixtures/v1/: what an operator of the first release (0.1.0, commit
d6e205e, migration 0001) has on disk, made by running that release's own code.

    .venv/bin/python -m tests.operations.make_v1_fixture       (from the repo root; ~1 min)

The 0.1.0 source is unpacked with `git archive` and run with this venv's interpreter
(PYTHONPATH first, as bench/serve_process.py does for older commits). Twice — on SQLite (the
embedded mode) and on a fresh PostgreSQL database (dumped with pg_dump) — it makes recordings
in every state an upgrade must carry:

- stored in a customer's bucket (app "custom", backend s3 against SeaweedFS) and in the default
  store (app "default", webhook API version 1);
- failed on bad credentials and kept in the default store (app "badcreds");
- deleted through the API;
- a webhook that gave up (app "gone": its URL answers 503, schedule 0.2 s, 0.2 s);
- a webhook pending (app "pending": 503 at the first attempt, stopped before the next one
  5 s later, so it is due whenever the test runs);
- received and not claimed (`serve --no-worker`: one for "custom", one for "default").

What the tests need besides the database: the default store's files (0.1.0 kept metadata in
`.callvault-meta/` sidecars, which git keeps), the customer bucket's objects (the test puts
them back into its own SeaweedFS: they are the customer's, not the backup's), the key and
ingest token (test-only values), and facts.json (the account, the ids by state, the sha256 of
each recording's bytes, and 0.1.0's own answer to GET /v2/recordings).

Stored URLs name the webhook receiver's port, so it is fixed (RECEIVER_PORT); the customer
bucket's endpoint is not stored (backend s3 reads AWS_ENDPOINT_URL), so any SeaweedFS works.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "v1"
V1_COMMIT = "d6e205e"
RECEIVER_PORT = 18091
REGION = "us-east-1"
BUCKETS = {"sqlite": "v1-sqlite-customer", "postgresql": "v1-postgresql-customer"}
# test-only secrets of the fixture (they open nothing outside it)
ENCRYPTION_KEY = base64.b64encode(hashlib.sha256(b"callvault v1 fixture").digest()).decode()
INGEST_TOKEN = "v1-fixture-ingest-token"
POSTGRES_ADMIN = os.environ.get(
    "CALLVAULT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def unpack(commit: str, into: Path) -> Path:
    """`src/` of an older commit, to run with PYTHONPATH; raises if the commit is unknown."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "src"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def old_env(src: Path, **values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALLVAULT_", "AWS_", "STORAGE_EMULATOR_HOST"))
    }
    env.update(PYTHONPATH=str(src), CALLVAULT_ALLOW_PRIVATE_NETWORKS="true", **values)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "callvault", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"callvault {args} exited {done.returncode}: {done.stderr}"
    return done.stdout


@contextmanager
def serving(env: dict[str, str], log: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    env = {**env, "CALLVAULT_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "callvault", "serve", "--port", str(port), *extra],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def wav(seconds: float) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(os.urandom(int(seconds * 8000) * 2))
    return out.getvalue()


class Scenario:
    def __init__(
        self,
        variant: str,
        src: Path,
        work: Path,
        receiver: WebhookReceiver,
        s3: SeaweedFS,
        database_url: str | None,
    ) -> None:
        self.variant = variant
        self.work = work
        self.receiver = receiver
        self.bucket = BUCKETS[variant]
        values = {
            "CALLVAULT_DATA_DIR": str(work / "data"),
            "AWS_ENDPOINT_URL": s3.endpoint,
        }
        if database_url:
            values.update(
                CALLVAULT_DATABASE_URL=database_url,
                CALLVAULT_ENCRYPTION_KEYS=ENCRYPTION_KEY,
                CALLVAULT_INGEST_TOKEN=INGEST_TOKEN,
                CALLVAULT_DEFAULT_STORE=f"file://{work / 'data' / 'recordings'}",
            )
        self.env = old_env(src, **values)
        self.s3 = s3
        self.facts: dict[str, Any] = {"variant": variant, "made_by": V1_COMMIT, "states": {}}
        self.audio: dict[str, bytes] = {}
        self.apps: dict[str, str] = {}

    def token(self) -> str:
        if "CALLVAULT_INGEST_TOKEN" in self.env:
            return self.env["CALLVAULT_INGEST_TOKEN"]
        return (self.work / "data" / "ingest.token").read_text().strip()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.facts['account']['api_key']}"}

    def ingest(self, url: str, app: str, state: str) -> str:
        audio = wav(0.3)
        started = datetime(2026, 11, 23, 12, tzinfo=UTC) + timedelta(seconds=len(self.audio) * 10)
        leg = str(uuid.uuid4())
        metadata = {
            "connection_id": self.apps[app],
            "call_control_id": f"v3:{leg}",
            "call_leg_id": leg,
            "call_session_id": str(uuid.uuid4()),
            "format": "wav",
            "channels": "single",
            "recording_started_at": started.isoformat().replace("+00:00", "Z"),
            "recording_ended_at": (started + timedelta(seconds=1))
            .isoformat()
            .replace("+00:00", "Z"),
            "client_state": base64.b64encode(f"{app}/{state}".encode()).decode(),
        }
        answer = httpx.post(
            f"{url}/internal/v1/recordings",
            files={
                "metadata": (None, json.dumps(metadata), "application/json"),
                "audio": ("r.wav", audio, "audio/wav"),
            },
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        recording_id = str(answer.json()["data"]["id"])
        self.audio[recording_id] = audio
        self.facts["states"].setdefault(state, []).append(recording_id)
        return recording_id

    def wait_state(self, url: str, recording_id: str, state: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            got = httpx.get(f"{url}/v2/recordings/{recording_id}", headers=self.headers())
            if got.status_code == 200 and got.json()["data"]["storage"]["state"] == state:
                return
            assert time.monotonic() < deadline, got.text
            time.sleep(0.2)

    def make_and_save(self) -> None:
        (self.work / "data").mkdir(parents=True)
        self.make()
        self.save(FIXTURE / self.variant)

    def make(self) -> None:
        logs = self.work / "serve.log"
        if "CALLVAULT_DATABASE_URL" in self.env:
            cli(self.env, "migrate")
        account = json.loads(cli(self.env, "accounts", "create", "v1 operator", "--json"))
        self.facts["account"] = account
        self.s3.create_bucket(self.bucket)

        run1 = {**self.env, "CALLVAULT_WEBHOOK_SCHEDULE": "0.2,0.2"}
        with serving(run1, logs) as url:
            for app, version, path in (
                ("custom", "2", "/ok"),
                ("default", "1", "/ok"),
                ("badcreds", "2", "/ok"),
                ("gone", "2", "/gone"),
                ("pending", "2", "/pending"),
            ):
                created = httpx.post(
                    f"{url}/v2/call_control_applications",
                    json={
                        "application_name": app,
                        "webhook_event_url": self.receiver.url(path),
                        "webhook_api_version": version,
                    },
                    headers=self.headers(),
                )
                assert created.status_code == 201, created.text
                self.apps[app] = str(created.json()["data"]["id"])
            for app, secret in (("custom", self.s3.secret_key), ("badcreds", "wrong-secret")):
                stored = httpx.post(
                    f"{url}/v2/custom_storage_credentials/{self.apps[app]}",
                    json={
                        "backend": "s3",
                        "configuration": {
                            "bucket": self.bucket,
                            "region": REGION,
                            "aws_access_key_id": self.s3.access_key,
                            "aws_secret_access_key": secret,
                        },
                    },
                    headers=self.headers(),
                )
                assert stored.status_code in (200, 201), stored.text
            custom = self.ingest(url, "custom", "stored_custom")
            default = self.ingest(url, "default", "stored_default")
            doomed = self.ingest(url, "default", "deleted")
            failed = self.ingest(url, "badcreds", "failed")
            gone = self.ingest(url, "gone", "webhook_gave_up")
            for recording_id, state in (
                (custom, "stored"),
                (default, "stored"),
                (doomed, "stored"),
                (failed, "failed"),
                (gone, "stored"),
            ):
                self.wait_state(url, recording_id, state)
            deleted = httpx.delete(f"{url}/v2/recordings/{doomed}", headers=self.headers())
            assert deleted.status_code == 200, deleted.text
            self.wait_events(lambda: self.count_events(gone, "failed") == 1)

        run2 = {**self.env, "CALLVAULT_WEBHOOK_SCHEDULE": "5,5,5,5,5"}
        with serving(run2, logs) as url:
            pending = self.ingest(url, "pending", "webhook_pending")
            self.wait_state(url, pending, "stored")
            self.wait_events(lambda: self.attempts(pending) >= 1)

        with serving(self.env, logs, "--no-worker") as url:
            self.ingest(url, "custom", "received")
            self.ingest(url, "default", "received")
            listing = httpx.get(
                f"{url}/v2/recordings", params={"page[size]": 250}, headers=self.headers()
            )
            assert listing.status_code == 200, listing.text
            self.facts["listing"] = listing.json()["data"]
        self.facts["apps"] = self.apps
        self.facts["sha256"] = {k: hashlib.sha256(v).hexdigest() for k, v in self.audio.items()}

    # the database, read directly (the 0.1.0 API shows no webhook events)
    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.variant == "sqlite":
            connection = sqlite3.connect(self.work / "data" / "callvault.db")
            try:
                return list(connection.execute(sql.replace("$1", "?"), args).fetchall())
            finally:
                connection.close()
        import asyncio

        import asyncpg

        async def fetch() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.env["CALLVAULT_DATABASE_URL"])
            try:
                return [tuple(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def count_events(self, recording_id: str, status: str) -> int:
        return len(
            [
                row
                for row in self.rows(
                    "SELECT status FROM webhook_events WHERE recording_id = $1", recording_id
                )
                if row[0] == status
            ]
        )

    def attempts(self, recording_id: str) -> int:
        found = self.rows(
            "SELECT attempts FROM webhook_events WHERE recording_id = $1", recording_id
        )
        return int(found[0][0]) if found else 0

    @staticmethod
    def wait_events(check: Any) -> None:
        deadline = time.monotonic() + 60
        while not check():
            assert time.monotonic() < deadline, "webhook events never reached their state"
            time.sleep(0.2)

    def save(self, target: Path) -> None:
        data = self.work / "data"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copytree(data / "recordings", target / "recordings")
        shutil.rmtree(target / "recordings" / ".callvault-tmp", ignore_errors=True)
        if self.variant == "sqlite":
            connection = sqlite3.connect(data / "callvault.db")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
            connection.close()
            shutil.copy(data / "callvault.db", target / "callvault.db")
            shutil.copy(data / "encryption.key", target / "encryption.key")
            shutil.copy(data / "ingest.token", target / "ingest.token")
        else:
            dump = subprocess.run(
                ["pg_dump", "--no-owner", "--no-privileges", self.env["CALLVAULT_DATABASE_URL"]],
                capture_output=True,
                text=True,
                check=True,
            )
            (target / "dump.sql").write_text(dump.stdout)
            self.facts["encryption_keys"] = ENCRYPTION_KEY
            self.facts["ingest_token"] = INGEST_TOKEN
        bucket_dir = target / "bucket"
        for key, body in self.s3_objects().items():
            (bucket_dir / key).parent.mkdir(parents=True, exist_ok=True)
            (bucket_dir / key).write_bytes(body)
        self.facts["bucket"] = self.bucket
        (target / "facts.json").write_text(json.dumps(self.facts, indent=1, sort_keys=True) + "\n")

    def s3_objects(self) -> dict[str, bytes]:
        import asyncio

        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.bucket,
            config={
                "endpoint": self.s3.endpoint,
                "region": REGION,
                "access_key_id": self.s3.access_key,
                "secret_access_key": self.s3.secret_key,
                "virtual_hosted_style_request": False,
            },
            client_options={"allow_http": True},
        )

        async def read() -> dict[str, bytes]:
            metas = await obstore.list(store).collect_async()
            found = {}
            for meta in metas:
                got = await obstore.get_async(store, meta["path"])
                found[str(meta["path"])] = bytes(await got.bytes_async())
            return found

        return asyncio.run(read())


def fresh_postgres() -> tuple[str, str]:
    import asyncio

    import asyncpg

    name = f"callvault_v1_fixture_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return name, f"{POSTGRES_ADMIN.rsplit('/', 1)[0]}/{name}"


def drop_postgres(name: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="callvault-v1-fixture-") as tmp:
        base = Path(tmp)
        src = unpack(V1_COMMIT, base / "v1")
        with (
            WebhookReceiver(bind_port=RECEIVER_PORT) as receiver,
            SeaweedFS(base / "s3") as s3,
        ):
            receiver.answer(503, seconds=24 * 3600, path="/gone")
            receiver.answer(503, seconds=24 * 3600, path="/pending")
            Scenario("sqlite", src, base / "sqlite", receiver, s3, None).make_and_save()
            name, url = fresh_postgres()
            try:
                Scenario("postgresql", src, base / "pg", receiver, s3, url).make_and_save()
            finally:
                drop_postgres(name)
    print(f"fixture written to {FIXTURE}")


if __name__ == "__main__":
    main()
