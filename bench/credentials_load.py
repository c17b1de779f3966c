"""`GET /v2/custom_storage_credentials/{id}` under load: one `callvault serve` process, 32
concurrent connections from `wrk`, requests/s and latency percentiles.

    .venv/bin/python bench/credentials_load.py [--connections 32] [--duration 10]
                                               [--threads 2] [--json] [--profile FILE]

The server is a child process on a fresh temp data dir (embedded defaults, worker on). Its
credentials are s3-generic (the configuration is decrypted and masked on every GET). `wrk`
comes from Debian (`apt-get install -y wrk`; `make bench` installs it when missing).
Targets (issue 14), against `GET /health` on the same server in the same run (measured right
after, same wrk options): >= 0.6 x health's requests/s and p99 <= 2 x health's p99.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serve_process import Profiler, ServeProcess, load_average

TARGET_RPS_RATIO = 0.6  # credentials req/s / health req/s
TARGET_P99_RATIO = 2.0  # credentials p99 / health p99
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, the latency distribution and the error counts from `wrk --latency`."""
    result: dict[str, Any] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    result["requests_per_s"] = float(rps.group(1))
    total = re.search(r"(\d+) requests in", output)
    result["requests"] = int(total.group(1)) if total else None
    for percent, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.MULTILINE):
        result[f"latency_p{percent}_ms"] = round(to_ms(value), 3)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = errors.group(1).strip() if errors else None
    return result


def wrk(url: str, api_key: str, *, connections: int, duration: int, threads: int) -> str:
    return subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {api_key}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", type=Path, help="py-spy the serve process into FILE")
    parser.add_argument(
        "--src", type=Path, help="run the server from this src/ dir (before/after comparisons)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2

    with (
        tempfile.TemporaryDirectory(prefix="callvault-bench-") as tmp,
        ServeProcess(Path(tmp), src=args.src) as serve,
    ):
        # nothing listens there: no webhook is sent in this bench
        account = serve.create_account("http://127.0.0.1:9/webhooks")
        serve.set_credentials(
            account,
            "s3-generic",
            {
                "bucket": "recordings-bench",
                "region": "us-east-1",
                "aws_access_key_id": "AKIABENCHBENCHBENCH",
                "aws_secret_access_key": "bench/secret/value/that/is/masked/0123",
                "endpoint": "http://127.0.0.1:9",
            },
        )
        url = f"{serve.url}/v2/custom_storage_credentials/{account.connection_id}"
        check = httpx.get(url, headers={"Authorization": f"Bearer {account.api_key}"})
        check.raise_for_status()
        # warm-up: code paths, connection pool, SQLite pages
        wrk(url, account.api_key, connections=args.connections, duration=2, threads=args.threads)
        load_before = load_average()
        cpu_before = serve.cpu_seconds()
        started = time.monotonic()
        if args.profile is not None:
            with Profiler(serve.pid, args.profile.resolve()):
                output = wrk(
                    url,
                    account.api_key,
                    connections=args.connections,
                    duration=args.duration,
                    threads=args.threads,
                )
        else:
            output = wrk(
                url,
                account.api_key,
                connections=args.connections,
                duration=args.duration,
                threads=args.threads,
            )
        elapsed = time.monotonic() - started
        cpu = serve.cpu_seconds() - cpu_before
        peak_rss = serve.status_mb("VmHWM")
        # the reference: the cheapest request the server answers, same load, same run
        health_output = wrk(
            f"{serve.url}/health",
            account.api_key,
            connections=args.connections,
            duration=args.duration,
            threads=args.threads,
        )

    result = parse_wrk(output)
    health = parse_wrk(health_output)
    result.update(
        connections=args.connections,
        duration_s=args.duration,
        wrk_threads=args.threads,
        serve_cpu_ms_per_request=(
            round(cpu * 1000 / result["requests"], 3) if result["requests"] else None
        ),
        serve_cpu_cores=round(cpu / elapsed, 2),
        serve_peak_rss_mb=round(peak_rss, 1),
        load_average_before=round(load_before, 2),
        load_average_after=round(load_average(), 2),
        health=health,
        rps_ratio=round(result["requests_per_s"] / health["requests_per_s"], 3),
        p99_ratio=round(
            result.get("latency_p99_ms", float("inf")) / health.get("latency_p99_ms", 1.0), 3
        ),
        targets={"rps_ratio_min": TARGET_RPS_RATIO, "p99_ratio_max": TARGET_P99_RATIO},
    )
    met = (
        result["rps_ratio"] >= TARGET_RPS_RATIO
        and result["p99_ratio"] <= TARGET_P99_RATIO
        and result["non_2xx"] == 0
    )
    result["met_targets"] = met
    if args.json:
        print(json.dumps(result))
    else:
        print(output.rstrip())
        print(
            f"\nGET credentials, {args.connections} connections, {args.duration} s: "
            f"{result['requests_per_s']:.0f} req/s, p50 {result.get('latency_p50_ms')} ms, "
            f"p99 {result.get('latency_p99_ms')} ms, non-2xx {result['non_2xx']}; serve CPU "
            f"{result['serve_cpu_ms_per_request']} ms/request ({result['serve_cpu_cores']} "
            f"cores); load {result['load_average_before']} -> {result['load_average_after']}"
        )
        print(
            f"GET /health, same options: {health['requests_per_s']:.0f} req/s, p50 "
            f"{health.get('latency_p50_ms')} ms, p99 {health.get('latency_p99_ms')} ms"
        )
        print(
            f"ratios: req/s {result['rps_ratio']:.2f} (target >= {TARGET_RPS_RATIO}), p99 "
            f"{result['p99_ratio']:.2f} (target <= {TARGET_P99_RATIO}): "
            + ("met" if met else "NOT MET")
        )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
