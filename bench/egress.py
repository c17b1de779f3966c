"""What the egress guard costs a customer upload: s3 puts through the guard against direct ones.

    .venv/bin/python bench/egress.py [--objects 200] [--size-kb 80] [--concurrency 8] [--rounds 3]

Starts SeaweedFS (tests/servers.py) as the "AWS" of the s3 backend (AWS_ENDPOINT_URL, which the
guard trusts by host and port), opens the same store twice — private networks allowed (no guard:
obstore connects itself) and refused (every connection through outbound/egress.py) — and puts
--objects recordings of --size-kb with --concurrency at a time, rounds alternating. Prints
recordings/s and CPU of this process per put for each (medians of --rounds), and the ratio
guarded / direct. Plain http is forwarded one request per connection (docs/security.md), so this
is the worst case: over https a CONNECT tunnel stays open and keep-alive works through it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


async def put_all(store, source: Path, count: int, concurrency: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for `count` puts."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await store.put_file(
                f"bench/{index}.wav", source, content_type="audio/wav", metadata={}
            )

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def run(args: argparse.Namespace) -> None:
    from tests.servers import SeaweedFS

    from callvault.storage import open_custom_store

    with tempfile.TemporaryDirectory() as tmp, SeaweedFS(Path(tmp) / "seaweedfs") as seaweed:
        os.environ["AWS_ENDPOINT_URL"] = seaweed.endpoint
        seaweed.create_bucket("bench")
        source = Path(tmp) / "rec.wav"
        source.write_bytes(os.urandom(args.size_kb * 1024))
        configuration = {
            "bucket": "bench",
            "region": "us-east-1",
            "aws_access_key_id": seaweed.access_key,
            "aws_secret_access_key": seaweed.secret_key,
        }
        stores = {
            "direct": open_custom_store("s3", configuration, allow_private_networks=True),
            "guarded": open_custom_store("s3", configuration, allow_private_networks=False),
        }
        await put_all(stores["direct"], source, 20, args.concurrency)  # warm up both
        await put_all(stores["guarded"], source, 20, args.concurrency)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
        for _ in range(args.rounds):
            for name, store in stores.items():
                results[name].append(await put_all(store, source, args.objects, args.concurrency))
    figures = {}
    print(
        f"{'store':<8} {'rec/s':>8} {'CPU/put':>9}   (medians of {args.rounds} rounds; "
        f"load {os.getloadavg()[0]:.2f})"
    )
    for name, runs in results.items():
        rate = statistics.median(args.objects / wall for wall, _ in runs)
        cpu = statistics.median(cpu / args.objects for _, cpu in runs) * 1000
        figures[name] = (rate, cpu)
        print(f"{name:<8} {rate:8.1f} {cpu:7.2f} ms")
    print(
        f"guarded/direct: throughput {figures['guarded'][0] / figures['direct'][0]:.2f}x, "
        f"CPU per put {figures['guarded'][1] / figures['direct'][1]:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size-kb", type=int, default=80)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
