"""The scaled-out layout on this machine: PostgreSQL, an S3 default store (SeaweedFS), one
`callvault serve --no-worker` and 1, then 2, `callvault worker` processes.

    .venv/bin/python bench/scale_out.py [--recordings 200] [--concurrency 8] [--workers 1,2]
                                        [--storage custom|default] [--json] [--src DIR]

For each worker count: K recordings (30 s mono 8 kHz WAVs, ~480 KB) ingested at concurrency C
until the last `call.recording.saved` webhook arrives (after a warm-up of 10 recordings);
recordings/s, and the CPU each process spent per recording (the API process, every worker,
SeaweedFS, this bench client). `--storage custom` (default): the connection stores in a
customer bucket of the same SeaweedFS (the worker copies staging -> customer bucket, then
deletes the staging copy); `default`: no custom storage (the worker only marks and announces).
PostgreSQL is the suite's (CALLVAULT_TEST_POSTGRES, default postgres@127.0.0.1:5432): a fresh
database per run, dropped afterwards. See docs/scaling.md for figures and what limits them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.pipeline import (
    RECORDING_SECONDS,
    Bench,
    Webhooks,
    process_cpu_seconds,
    run_concurrently,
)
from bench.serve_process import (
    REPO_ROOT,
    ServeProcess,
    fresh_postgres_database,
    load_average,
    wav_bytes,
)
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS

STAGING_BUCKET = "staging"
CUSTOMER_BUCKET = "customer"


class WorkerProcess:
    """`python -m callvault worker` with its own data dir (scratch space only)."""

    def __init__(self, base_dir: Path, env: dict[str, str]) -> None:
        base_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "CALLVAULT_DATA_DIR": str(base_dir / "data")}
        self.log_path = base_dir / "worker.log"
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "callvault", "worker"],
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        if self._log is not None:
            self._log.close()


async def measure(
    bench: Bench,
    workers: list[WorkerProcess],
    seaweed: SeaweedFS,
    files: list[bytes],
    concurrency: int,
) -> dict[str, Any]:
    accepted: dict[str, float] = {}

    async def one(index: int) -> None:
        recording_id, at = await bench.ingest(files[index], RECORDING_SECONDS)
        accepted[recording_id] = at

    # warm-up: connections, clients, PostgreSQL plans
    await run_concurrently(min(10, len(files)), concurrency, one)
    await bench.webhooks.wait_all(set(accepted), within=300)
    await asyncio.sleep(1.0)
    accepted.clear()

    serve_before = bench.serve.cpu_seconds()
    workers_before = [process_cpu_seconds(w.pid) for w in workers]
    seaweed_before = process_cpu_seconds(seaweed.pid)
    client_before = process_cpu_seconds(None)
    load_before = load_average()
    started = time.monotonic()
    await run_concurrently(len(files), concurrency, one)
    ingested = time.monotonic()
    await bench.webhooks.wait_all(set(accepted), within=900)
    last = max(bench.webhooks.arrived[rid] for rid in accepted)
    await asyncio.sleep(1.0)  # staging deletes after the last webhooks
    count = len(files)

    def per_recording_ms(seconds: float) -> float:
        return round(seconds * 1000 / count, 2)

    return {
        "workers": len(workers),
        "recordings": count,
        "recordings_per_s": round(count / (last - started), 2),
        "ingest_recordings_per_s": round(count / (ingested - started), 2),
        "cpu_ms_per_recording": {
            "serve --no-worker": per_recording_ms(bench.serve.cpu_seconds() - serve_before),
            **{
                f"worker {n + 1}": per_recording_ms(process_cpu_seconds(w.pid) - before)
                for n, (w, before) in enumerate(zip(workers, workers_before, strict=True))
            },
            "SeaweedFS": per_recording_ms(process_cpu_seconds(seaweed.pid) - seaweed_before),
            "bench client": per_recording_ms(process_cpu_seconds(None) - client_before),
        },
        "load_average": [round(load_before, 2), round(load_average(), 2)],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with fresh_postgres_database() as database_url:
        with (
            tempfile.TemporaryDirectory(prefix="callvault-scale-") as tmp_name,
            SeaweedFS(Path(tmp_name) / "seaweedfs") as seaweed,
            WebhookReceiver() as receiver,
        ):
            tmp = Path(tmp_name)
            seaweed.create_bucket(STAGING_BUCKET)
            seaweed.create_bucket(CUSTOMER_BUCKET)
            receiver._server.handle_error = lambda *_: None  # type: ignore[method-assign]
            env = {
                "CALLVAULT_DATABASE_URL": database_url,
                "CALLVAULT_DEFAULT_STORE": f"s3://{STAGING_BUCKET}?region={seaweed.region}"
                f"&endpoint={seaweed.endpoint}",
                "AWS_ACCESS_KEY_ID": seaweed.access_key,
                "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
                "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
                "CALLVAULT_INGEST_TOKEN": "ingest-" + secrets.token_urlsafe(16),
                "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
            }
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
            if args.src is not None:  # an older tree, for a before/after pair
                base_env["PYTHONPATH"] = str(args.src.resolve())
            api_dir = tmp / "api"
            api_dir.mkdir()
            results: dict[str, Any] = {"storage": args.storage, "rounds": []}
            with ServeProcess(
                api_dir, extra_env=env, src=args.src, serve_args=("--no-worker",)
            ) as serve:
                account = serve.create_account(receiver.url())
                if args.storage == "custom":
                    serve.set_credentials(
                        account,
                        "s3-generic",
                        {
                            "bucket": CUSTOMER_BUCKET,
                            "region": seaweed.region,
                            "aws_access_key_id": seaweed.access_key,
                            "aws_secret_access_key": seaweed.secret_key,
                            "endpoint": seaweed.endpoint,
                        },
                    )
                files = [wav_bytes(RECORDING_SECONDS, seed=i) for i in range(args.recordings)]
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                async with httpx.AsyncClient(
                    base_url=serve.url,
                    headers={"Authorization": f"Bearer {env['CALLVAULT_INGEST_TOKEN']}"},
                    timeout=httpx.Timeout(120.0),
                    limits=limits,
                ) as client:
                    bench = Bench(serve, account, client, Webhooks(receiver))
                    for count in args.workers:
                        workers = [
                            WorkerProcess(tmp / f"worker-{count}-{n}", {**base_env, **env}).start()
                            for n in range(count)
                        ]
                        try:
                            print(f"{count} worker(s) ...", file=sys.stderr)
                            result = await measure(bench, workers, seaweed, files, args.concurrency)
                        finally:
                            for worker in workers:
                                worker.stop()
                        print(f"  {result}", file=sys.stderr)
                        results["rounds"].append(result)
            return results


def report(results: dict[str, Any]) -> list[str]:
    lines = [
        f"scaled out: PostgreSQL, S3 default store (SeaweedFS), storage {results['storage']}, "
        "one `serve --no-worker`"
    ]
    for r in results["rounds"]:
        cpu = "  ".join(f"{name} {ms:.1f}" for name, ms in r["cpu_ms_per_recording"].items())
        lines.append(
            f"  {r['workers']} worker(s): {r['recordings_per_s']:6.1f} rec/s (ingest alone "
            f"{r['ingest_recordings_per_s']:.1f} rec/s); CPU ms per recording: {cpu}; "
            f"load {r['load_average'][0]} -> {r['load_average'][1]}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="worker counts, in turn")
    parser.add_argument("--storage", choices=["custom", "default"], default="custom")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--src", type=Path, help="run callvault from this src/ dir")
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    results = asyncio.run(run(args))
    print(json.dumps(results) if args.json else "\n".join(report(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
