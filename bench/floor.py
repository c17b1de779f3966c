"""How far callvault is from the floor of its own stack: `callvault serve` and
bench/floor_server.py (the same work per recording with nothing else, on the same libraries)
each measured like bench/pipeline.py measures serve — CPU per recording against one raw put
of the same file, throughput against the raw bound — alternating with raw puts in one run.

    .venv/bin/python bench/floor.py [--recordings 200] [--concurrency 8] [--rounds 3]
                                    [--variants callvault,raw+sqlite3,fastapi+sqlite3,...]

Variants: `callvault` (serve, custom storage in SeaweedFS) and `HTTP+DB[+thread]` floors,
HTTP `raw` (a bare ASGI callable) or `fastapi` (a FastAPI route), DB `sqlite3` (no statement
layer) or `sqlalchemy` (Core on callvault's own engine); `+thread`: the fsyncs (audio file,
commits) in a thread instead of on the event loop (which then waits for the disk); `+batched`
(issue 24): the row writes through a group commit (those ready together share one commit), the
floor of the work per recording with callvault's batch_writer.py design.

What it answers: when a floor alone misses issue 14's ratio targets (CPU <= 1.25 x a raw put,
throughput >= 0.35 x raw), no trimming of callvault on these libraries can meet them here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.pipeline import BUCKET, TARGETS, Bench, Environment, Webhooks, throughput, with_serve
from bench.serve_process import BenchAccount, ServeProcess, load_average
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS

DEFAULT_VARIANTS = (
    "callvault,raw+sqlite3,raw+sqlite3+thread,fastapi+sqlite3+thread,fastapi+sqlalchemy+thread,"
    "fastapi+sqlalchemy+thread+batched"
)


class FloorProcess(ServeProcess):
    """bench/floor_server.py as a child process, measured like `callvault serve`."""

    def __init__(self, base_dir: Path, seaweed: SeaweedFS, webhook_url: str, variant: str) -> None:
        super().__init__(base_dir)
        http, db, *where = variant.split("+")
        batched = "batched" in where
        where = [w for w in where if w != "batched"]
        self.arguments = [
            *("--data-dir", str(self.data_dir), "--bucket", BUCKET),
            *("--endpoint", seaweed.endpoint, "--region", seaweed.region),
            *("--access-key", seaweed.access_key, "--secret-key", seaweed.secret_key),
            *("--webhook-url", webhook_url, "--http", http, "--db", db),
            *("--blocking", where[0] if where else "loop"),
            *(["--batched"] if batched else []),
        ]

    def command(self) -> list[str]:
        script = Path(__file__).with_name("floor_server.py")
        return [sys.executable, str(script), "--port", str(self.port), *self.arguments]

    @property
    def ingest_token(self) -> str:
        return "floor"  # the floor checks no token


async def with_floor(env: Environment, variant: str, args: argparse.Namespace) -> Any:
    base = env.tmp / variant
    base.mkdir()
    with FloorProcess(base, env.seaweed, env.receiver.url(), variant) as floor:
        account = BenchAccount("floor", "floor", "", connection_id="floor")
        async with httpx.AsyncClient(
            base_url=floor.url,
            timeout=httpx.Timeout(120.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        ) as client:
            bench = Bench(floor, account, client, env.webhooks)
            return await throughput(
                bench, env.seaweed, env.tmp, args.recordings, args.concurrency, args.rounds
            )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="callvault-floor-") as tmp_name:
        tmp = Path(tmp_name)
        with SeaweedFS(tmp / "seaweedfs") as seaweed, WebhookReceiver() as receiver:
            seaweed.create_bucket(BUCKET)
            receiver._server.handle_error = lambda *_: None  # type: ignore[method-assign]
            env = Environment(tmp, seaweed, receiver, Webhooks(receiver))
            for variant in args.variants.split(","):
                print(f"{variant} ...", file=sys.stderr)
                if variant == "callvault":

                    async def run(bench: Bench) -> Any:
                        return await throughput(
                            bench, seaweed, tmp, args.recordings, args.concurrency, args.rounds
                        )

                    results[variant] = await with_serve(env, "callvault", run)
                else:
                    results[variant] = await with_floor(env, variant, args)
    return results


def report(results: dict[str, Any]) -> list[str]:
    """One line per variant; `cores busy` = (serve + SeaweedFS + bench process) CPU per
    recording x recordings/s: near 2.0, the round was bound by this machine's two cores."""
    lines = [
        "variant                    rec/s  raw rec/s  ratio  serve CPU  raw put CPU  CPU ratio"
        "  SeaweedFS  client  cores busy (raw)",
    ]
    for variant, t in results.items():
        p, r = t["pipeline"], t["raw"]
        raw_cpu = r["seaweedfs_cpu_s_per_recording"] + r["client_cpu_s_per_recording"]
        others = p["seaweedfs_cpu_s_per_recording"] + p["client_cpu_s_per_recording"]
        busy = (p["cpu_s_per_recording"] + others) * p["recordings_per_s"]
        lines.append(
            f"{variant:<26} {p['recordings_per_s']:5.1f}  {r['recordings_per_s']:9.1f}  "
            f"{t['ratio']:5.2f}  {p['cpu_s_per_recording'] * 1000:6.1f} ms  "
            f"{raw_cpu * 1000:8.1f} ms  {t['cpu_ratio']:9.2f}  "
            f"{p['seaweedfs_cpu_s_per_recording'] * 1000:6.1f} ms "
            f"{p['client_cpu_s_per_recording'] * 1000:5.1f} ms  "
            f"{busy:4.2f} ({raw_cpu * r['recordings_per_s']:4.2f})"
        )
    lines.append(
        f"targets (issue 14): ratio >= {TARGETS['ratio_min']}, "
        f"CPU ratio <= {TARGETS['cpu_ratio_max']}; medians of the rounds"
    )
    if "callvault" in results:
        serve = results["callvault"]["pipeline"]["cpu_s_per_recording"]
        for variant, t in results.items():
            if variant != "callvault":
                share = t["pipeline"]["cpu_s_per_recording"] / serve
                lines.append(f"{variant}: {share:.0%} of callvault's CPU per recording")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    args = parser.parse_args()
    start = load_average()
    results = asyncio.run(measure(args))
    for line in report(results):
        print(line)
    print(f"load average {start:.2f} -> {load_average():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
