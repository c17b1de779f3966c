"""The webhook client alone: `Sender.post` back to back against a receiver in its own process.

    .venv/bin/python bench/webhook_client.py [--requests 200] [--rounds 3] [--keep-alive]
                                             [--src DIR]

The receiver is bench/plain_receiver.py (http.server: HTTP/1.0, or HTTP/1.1 kept alive with
`--keep-alive`: the answer's head and body in two sends with Nagle's algorithm on). Prints, per
round, the request's wall time (p50, min, max) and this process's CPU per request (uvloop, as
serve runs). `--src`: run the client from another source tree (re-executes with PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

BODY = '{"data":{"event_type":"call.recording.saved","payload":{"x":"' + "y" * 700 + '"}}}'


async def round_of(url: str, requests: int) -> tuple[list[float], float]:
    """(wall ms of each request, CPU µs per request) after 20 warm-up requests."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from callvault.webhooks.attempt import Sender

    key = Ed25519PrivateKey.generate()
    sender = Sender(allow_private_networks=True)
    for _ in range(20):
        await sender.post(url, BODY, key, 2.0)
    walls = []
    cpu = time.process_time()
    for _ in range(requests):
        started = time.perf_counter()
        await sender.post(url, BODY, key, 2.0)
        walls.append((time.perf_counter() - started) * 1000)
    spent = (time.process_time() - cpu) / requests * 1e6
    await sender.aclose()
    return walls, spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep-alive", action="store_true")
    parser.add_argument("--src", type=Path)
    args = parser.parse_args()
    if args.src is not None and os.environ.get("PYTHONPATH") != str(args.src.resolve()):
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
        return subprocess.run([sys.executable, *sys.argv], env=env).returncode
    import uvloop
    from bench.plain_receiver import PlainReceiver

    import callvault

    with PlainReceiver(keep_alive=args.keep_alive) as receiver:
        print(f"callvault from {Path(callvault.__file__).parents[1]}")
        for n in range(args.rounds):
            walls, cpu = uvloop.run(round_of(receiver.url(), args.requests))
            print(
                f"  round {n + 1}: p50 {statistics.median(walls):6.2f} ms  min {min(walls):6.2f}"
                f"  max {max(walls):6.1f}  CPU {cpu:6.0f} µs/request  "
                f"load {os.getloadavg()[0]:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
