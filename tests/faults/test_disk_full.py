"""The disk fills up: the data dir (incoming uploads, the local default store) lives on a
small tmpfs that this test mounts as root (`mount -t tmpfs -o size=…`, a real ENOSPC) and
fills with a ballast file. Ingest answers 507 with a clear reason and keeps no partial file;
once the ballast is removed, the same recordings are accepted without any restart. Then every
accepted recording is in the default store with the sha256 of the bytes sent, with a verified
`call.recording.saved`; no 5xx other than 503/507 was answered; nothing is left in `incoming/`
or the store's temp directory, and no sidecar without its object."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import NewAccount, create_account
from callvault.config import Settings
from callvault.db import transaction
from callvault.recordings.models import Recording
from callvault.runtime import Runtime
from callvault.storage.local import META_DIR, TEMP_DIR
from tests.conftest import LiveServer, make_settings
from tests.faults.cluster import files_under, verify_signature
from tests.faults.system import fill, small_filesystem
from tests.faults.wavs import noise_wav
from tests.receiver import WebhookReceiver
from tests.worker.flow import create_application, ingest_metadata

RECORDINGS = 12
FILESYSTEM_BYTES = 4 * 1024 * 1024
LEAVE_BYTES = 160 * 1024  # room for about two recordings (and their sidecars)

pytestmark = pytest.mark.slow


@pytest.fixture
def full_disk_settings(tmp_path: Path, fresh_sqlite: Callable[[Path], str]) -> Iterator[Settings]:
    sqlite_url = fresh_sqlite(tmp_path / "db")  # keys of its own: a database of its own
    with small_filesystem(tmp_path / "small", FILESYSTEM_BYTES) as data_dir:
        yield make_settings(data_dir, sqlite_url)


async def test_ingest_answers_507_and_recovers_when_space_returns(
    full_disk_settings: Settings, webhook_receiver: WebhookReceiver
) -> None:
    settings = full_disk_settings
    server = LiveServer(settings).start()
    runtime = Runtime.build(settings)
    try:
        async with transaction(runtime.sessions) as session:
            account: NewAccount = await create_account(session, settings.keyring, "disk full")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            connection_id = await create_application(
                client, account.api_key, webhook_receiver.url()
            )
            ballast = await asyncio.to_thread(fill, settings.data_dir, LEAVE_BYTES)
            sent = {}
            answers: Counter[int] = Counter()
            reasons: set[str] = set()
            freed_at: float | None = None
            started = time.monotonic()
            for _ in range(RECORDINGS):
                metadata = ingest_metadata(connection_id)
                audio = noise_wav(2.0)  # 32 KB
                while True:
                    response = await client.post(
                        "/internal/v1/recordings",
                        files={
                            "metadata": (None, json.dumps(metadata), "application/json"),
                            "audio": ("r.wav", audio, "audio/wav"),
                        },
                        headers={"Authorization": f"Bearer {settings.ingest_token}"},
                    )
                    answers[response.status_code] += 1
                    if response.status_code in (200, 202):
                        sent[response.json()["data"]["id"]] = audio
                        break
                    assert response.status_code in (503, 507), response.text
                    if response.status_code == 507:
                        assert response.headers.get("retry-after")
                        error = response.json()["errors"][0]
                        assert error["title"] == "Insufficient storage"
                        reasons.add(error["detail"])
                        # no partial file of the refused upload anywhere in the data dir
                        assert not files_under(settings.data_dir / "incoming")
                    if answers[507] >= 3 and freed_at is None:
                        ballast.unlink()  # space returns: no restart, no operator action
                        freed_at = time.monotonic() - started
                    await asyncio.sleep(0.1)
            assert answers[507] >= 3, answers  # the disk did fill up
            assert any("out of space" in reason for reason in reasons)

            # every accepted recording in its final place (the default store), identical bytes
            async def all_stored() -> bool:
                async with runtime.sessions() as session:
                    rows = [await session.get(Recording, rid) for rid in sent]
                return all(r is not None and r.status == "stored" for r in rows)

            deadline = time.monotonic() + 30
            while not await all_stored():
                assert time.monotonic() < deadline, "not every recording was stored"
                await asyncio.sleep(0.1)
            async with runtime.sessions() as session:
                rows = {rid: await session.get(Recording, rid) for rid in sent}
            for recording_id, audio in sent.items():
                row = rows[recording_id]
                assert row is not None and row.default_store_key
                stored = (settings.data_dir / "recordings" / row.default_store_key).read_bytes()
                assert hashlib.sha256(stored).digest() == hashlib.sha256(audio).digest()
            deliveries = await webhook_receiver.wait_for(len(sent), within=30)
            verified = set()
            for delivery in deliveries:
                verify_signature(delivery, account.webhook_public_key)
                verified.add(delivery.payload["recording_id"])
            assert verified == set(sent)
    finally:
        server.stop()
        await runtime.close()
    assert not [s for s in answers if s >= 500 and s not in (503, 507)]
    # nothing left: no upload temp file, no store temp file, no sidecar without its object
    assert files_under(settings.data_dir / "incoming", settings.data_dir / "staging") == []
    store_root = settings.data_dir / "recordings"
    assert files_under(store_root / TEMP_DIR) == []
    meta_root = store_root / META_DIR
    for sidecar in files_under(meta_root):
        key = str(sidecar.relative_to(meta_root)).removesuffix(".json")
        assert (store_root / key).exists(), f"a sidecar without its object: {sidecar}"
    print(f"\ndisk-full fault test: answers {dict(answers)}, space freed at {freed_at:.1f} s")
