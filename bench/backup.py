"""A backup's size and time for N recordings (issue 25's closing number).

    .venv/bin/python bench/backup.py [--recordings 10000] [--seconds 1.0] [--concurrency 8]

Starts `callvault serve` on a fresh data dir (embedded: SQLite, local default store; a local
webhook receiver answering 200), ingests N recordings of `--seconds` of 8 kHz mono WAV over
HTTP, waits until every webhook is delivered, then runs `callvault backup DEST` twice: while
idle, and again while another `--during` recordings come in. Prints the backup's size (du),
its time, the database's and the objects' share, and the restore's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve_process import ServeProcess, wav_bytes
from tests.receiver import WebhookReceiver


def metadata(connection_id: str, index: int) -> dict[str, object]:
    started = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(seconds=index)
    leg = str(uuid.uuid4())
    return {
        "connection_id": connection_id,
        "call_control_id": f"v3:{leg}",
        "call_leg_id": leg,
        "call_session_id": str(uuid.uuid4()),
        "format": "wav",
        "channels": "single",
        "recording_started_at": started.isoformat().replace("+00:00", "Z"),
        "recording_ended_at": (started + timedelta(seconds=1)).isoformat().replace("+00:00", "Z"),
    }


async def ingest(
    url: str, token: str, connection_id: str, first: int, count: int, audio: bytes, concurrency: int
) -> float:
    queue = iter(range(first, first + count))
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:

        async def lane() -> None:
            for index in queue:
                response = await client.post(
                    f"{url}/internal/v1/recordings",
                    files={
                        "metadata": (None, json.dumps(metadata(connection_id, index))),
                        "audio": ("r.wav", audio, "audio/wav"),
                    },
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code in (200, 202), response.text

        await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.monotonic() - started


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "callvault", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--during", type=int, default=500)
    args = parser.parse_args()
    audio = wav_bytes(args.seconds)
    with (
        tempfile.TemporaryDirectory(prefix="callvault-bench-backup-") as tmp,
        WebhookReceiver() as receiver,
    ):
        base = Path(tmp)
        with ServeProcess(base) as serve:
            account = serve.create_account(receiver.url())
            took = asyncio.run(
                ingest(
                    serve.url,
                    serve.ingest_token,
                    account.connection_id,
                    0,
                    args.recordings,
                    audio,
                    args.concurrency,
                )
            )
            print(f"ingested {args.recordings} x {len(audio)} bytes in {took:.1f} s")
            deadline = time.monotonic() + 600
            while len(receiver.received()) < args.recordings:
                assert time.monotonic() < deadline, "webhooks not delivered"
                time.sleep(0.5)
            idle = timed(serve.env, "backup", str(base / "idle"))
            print(
                f"backup (idle): {du(base / 'idle') / 1e6:.1f} MB in {idle:.2f} s "
                f"(database {(base / 'idle' / 'callvault.db').stat().st_size / 1e6:.1f} MB, "
                f"objects {du(base / 'idle' / 'recordings') / 1e6:.1f} MB)"
            )

            async def busy() -> float:
                load = asyncio.create_task(
                    ingest(
                        serve.url,
                        serve.ingest_token,
                        account.connection_id,
                        args.recordings,
                        args.during,
                        audio,
                        2,
                    )
                )
                await asyncio.sleep(0.5)
                took = await asyncio.to_thread(timed, serve.env, "backup", str(base / "busy"))
                await load
                return took

            during = asyncio.run(busy())
            print(f"backup (under ingest): {du(base / 'busy') / 1e6:.1f} MB in {during:.2f} s")
        env = {k: v for k, v in serve.env.items() if k != "CALLVAULT_DATA_DIR"}
        restore = timed(env, "restore", str(base / "idle"), "--data-dir", str(base / "restored"))
        print(f"restore: {restore:.2f} s")
        shutil.rmtree(base / "restored", ignore_errors=True)


if __name__ == "__main__":
    main()
