"""`GET /v2/custom_storage_credentials/{id}` under load: one `callvault serve` process, 32
concurrent connections from `wrk`, requests/s and latency percentiles.

    .venv/bin/python bench/credentials_load.py [--connections 32] [--duration 10]
                                               [--threads 2] [--rounds 3] [--json]
                                               [--database sqlite|postgresql]
                                               [--profile FILE]

The server is a child process on a fresh temp data dir (embedded defaults, worker on). Its
credentials are s3-generic (the configuration is decrypted and masked on every GET). `wrk`
comes from Debian (`apt-get install -y wrk`; `make bench` installs it when missing).
Targets (issue 14), against `GET /health` on the same server in the same run, same wrk options,
in `--rounds` pairs whose order alternates: >= 0.6 x health's requests/s and p99 <= 2 x
health's p99, each the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.serve_process import Profiler, ServeProcess, fresh_postgres_database, load_average

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


def measure(
    serve: ServeProcess, url: str, api_key: str, args: argparse.Namespace, profile: Path | None
) -> dict[str, Any]:
    """One wrk run against `url`, with the serve process's CPU over it."""
    cpu_before = serve.cpu_seconds()
    started = time.monotonic()
    options = {"connections": args.connections, "duration": args.duration, "threads": args.threads}
    if profile is not None:
        with Profiler(serve.pid, profile.resolve()):
            output = wrk(url, api_key, **options)
    else:
        output = wrk(url, api_key, **options)
    elapsed = time.monotonic() - started
    cpu = serve.cpu_seconds() - cpu_before
    result = parse_wrk(output)
    result["serve_cpu_ms_per_request"] = (
        round(cpu * 1000 / result["requests"], 3) if result["requests"] else None
    )
    result["serve_cpu_cores"] = round(cpu / elapsed, 2)
    result["wrk_output"] = output
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="pairs (credentials, health)")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the embedded SQLite file, or a fresh database in the suite's PostgreSQL",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", type=Path, help="py-spy the serve process into FILE")
    parser.add_argument(
        "--src", type=Path, help="run the server from this src/ dir (before/after comparisons)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk (make bench does it)", file=sys.stderr)
        return 2

    if args.database == "postgresql":

        async def on_postgresql() -> int:
            async with fresh_postgres_database() as url:
                # on PostgreSQL serve refuses to start without keys (none is generated)
                key = base64.b64encode(secrets.token_bytes(32)).decode()
                env = {"CALLVAULT_DATABASE_URL": url, "CALLVAULT_ENCRYPTION_KEYS": key}
                return await asyncio.to_thread(run, args, env)

        return asyncio.run(on_postgresql())
    return run(args, {})


def run(args: argparse.Namespace, env: dict[str, str]) -> int:
    rounds: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="callvault-bench-") as tmp,
        ServeProcess(Path(tmp), src=args.src, extra_env=env) as serve,
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
        health_url = f"{serve.url}/health"
        check = httpx.get(url, headers={"Authorization": f"Bearer {account.api_key}"})
        check.raise_for_status()
        # warm-up of both: code paths, connection pool, SQLite pages
        for warm in (url, health_url):
            wrk(warm, account.api_key, connections=args.connections, duration=2, threads=2)
        load_before = load_average()
        for number in range(args.rounds):
            # the reference is the cheapest request the server answers, same load, same run;
            # the order alternates so that neither side always runs on a warmer machine
            order = [("credentials", url), ("health", health_url)]
            if number % 2:
                order.reverse()
            pair: dict[str, Any] = {}
            for name, target in order:
                profile = args.profile if name == "credentials" and number == 0 else None
                pair[name] = measure(serve, target, account.api_key, args, profile)
            pair["rps_ratio"] = (
                pair["credentials"]["requests_per_s"] / pair["health"]["requests_per_s"]
            )
            pair["p99_ratio"] = pair["credentials"].get("latency_p99_ms", float("inf")) / pair[
                "health"
            ].get("latency_p99_ms", 1.0)
            rounds.append(pair)
            if not args.json:
                print(round_line(number + 1, pair))
        peak_rss = serve.status_mb("VmHWM")

    def median_of(side: str, key: str) -> float:
        return statistics.median(pair[side][key] for pair in rounds)

    result: dict[str, Any] = {
        "connections": args.connections,
        "duration_s": args.duration,
        "wrk_threads": args.threads,
        "rounds": len(rounds),
        "database": args.database,
        "requests_per_s": median_of("credentials", "requests_per_s"),
        "latency_p50_ms": median_of("credentials", "latency_p50_ms"),
        "latency_p99_ms": median_of("credentials", "latency_p99_ms"),
        "serve_cpu_ms_per_request": median_of("credentials", "serve_cpu_ms_per_request"),
        "non_2xx": sum(pair["credentials"]["non_2xx"] for pair in rounds),
        "serve_peak_rss_mb": round(peak_rss, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(load_average(), 2),
        "health": {
            "requests_per_s": median_of("health", "requests_per_s"),
            "latency_p50_ms": median_of("health", "latency_p50_ms"),
            "latency_p99_ms": median_of("health", "latency_p99_ms"),
            "serve_cpu_ms_per_request": median_of("health", "serve_cpu_ms_per_request"),
        },
        "rps_ratio": round(statistics.median(pair["rps_ratio"] for pair in rounds), 3),
        "p99_ratio": round(statistics.median(pair["p99_ratio"] for pair in rounds), 3),
        "targets": {"rps_ratio_min": TARGET_RPS_RATIO, "p99_ratio_max": TARGET_P99_RATIO},
    }
    met = (
        result["rps_ratio"] >= TARGET_RPS_RATIO
        and result["p99_ratio"] <= TARGET_P99_RATIO
        and result["non_2xx"] == 0
    )
    result["met_targets"] = met
    if args.json:
        print(json.dumps(result))
    else:
        print(rounds[0]["credentials"]["wrk_output"].rstrip())
        health = result["health"]
        print(
            f"\nGET credentials ({args.database}), {args.connections} connections, "
            f"{args.duration} s, median of "
            f"{len(rounds)} rounds: {result['requests_per_s']:.0f} req/s, p50 "
            f"{result['latency_p50_ms']} ms, p99 {result['latency_p99_ms']} ms, non-2xx "
            f"{result['non_2xx']}; serve CPU {result['serve_cpu_ms_per_request']} ms/request; "
            f"load {result['load_average_before']} -> {result['load_average_after']}"
        )
        print(
            f"GET /health, same options: {health['requests_per_s']:.0f} req/s, p50 "
            f"{health['latency_p50_ms']} ms, p99 {health['latency_p99_ms']} ms, serve CPU "
            f"{health['serve_cpu_ms_per_request']} ms/request"
        )
        print(
            f"ratios (median of the rounds' ratios): req/s {result['rps_ratio']:.2f} (target >= "
            f"{TARGET_RPS_RATIO}), p99 {result['p99_ratio']:.2f} (target <= "
            f"{TARGET_P99_RATIO}): " + ("met" if met else "NOT MET")
        )
    return 0 if met else 1


def round_line(number: int, pair: dict[str, Any]) -> str:
    credentials, health = pair["credentials"], pair["health"]
    return (
        f"  round {number}: credentials {credentials['requests_per_s']:.0f} req/s p99 "
        f"{credentials.get('latency_p99_ms')} ms cpu {credentials['serve_cpu_ms_per_request']} "
        f"ms/req | health {health['requests_per_s']:.0f} req/s p99 "
        f"{health.get('latency_p99_ms')} ms cpu {health['serve_cpu_ms_per_request']} ms/req | "
        f"ratios {pair['rps_ratio']:.2f} / {pair['p99_ratio']:.2f}  load {load_average():.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
