"""The whole pipeline against its raw bound: ingest over HTTP -> default store -> worker ->
customer bucket (SeaweedFS, SigV4 checked) -> signed webhook, versus obstore putting the same
files straight into the same bucket.

    .venv/bin/python bench/pipeline.py [--recordings 200] [--concurrency 8] [--rounds 3]
                                       [--mode throughput,latency,large] [--json]
                                       [--encryption off|on|both]
                                       [--storage custom|default|both]
                                       [--receiver suite|plain] [--egress-guard]

Modes (comma-separated, default `throughput,latency`; `all` = the three):
- throughput: K recordings (30 s mono 8 kHz 16-bit WAVs, ~480 KB) ingested at concurrency C
  until the last webhook arrives, and the same K files put with obstore at the same
  concurrency; rounds alternate which goes first; medians are quoted. Also: the serve process's
  CPU seconds per recording (utime+stime delta / K), latency from the 202 at the client to the
  webhook at the receiver (p50/p99), and its peak RSS (VmHWM).
- latency: ~30 recordings one at a time (low load): p50/p99 from 202 to webhook.
- large: one 1 GiB recording ingested and uploaded by a fresh serve process: its peak RSS
  growth (VmHWM after, reset before, minus VmRSS before).

`--receiver plain`: the webhooks go to `bench/plain_receiver.py` in its own process (http.server's
defaults: HTTP/1.0, a new connection per webhook; `plain-keepalive`: HTTP/1.1, kept alive)
instead of the suite's receiver (tests/receiver.py, HTTP/1.1, a thread of the bench).
`--egress-guard`: serve refuses private networks (the production default), so every storage
request goes through the egress guard (outbound/egress.py); the custom storage is then the `s3`
backend with SeaweedFS as the operator's AWS_ENDPOINT_URL (trusted by the guard), and the bench
runs in a private network namespace (`unshare --net`, root) where the receiver listens on a
public address (11.22.33.44 on its loopback), which the webhook's address check lets through.
The latency mode also splits each recording's time into hops from the serve log's timestamps.

`--encryption on` encrypts every recording for a customer key (docs/encryption.md); `both` runs
each mode without, then with it (results suffixed `_encrypted`), e.g. to compare CPU per
recording. The 1 GiB recording's growth target is tighter when encrypted (issue 12: 64 MB).

Every mode runs `callvault serve` as a child process on a fresh temp data dir (embedded
defaults: SQLite, local default store) with the in-process worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import obstore
from obstore.store import S3Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.plain_receiver import PlainReceiver
from bench.serve_process import (
    CLOCK_TICKS,
    BenchAccount,
    Profiler,
    ServeProcess,
    load_average,
    percentile,
    use_encryption_key,
    wav_bytes,
    wav_header,
)
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS

BUCKET = "bench"
BOUNDARY = "callvault-bench-5b1e0c"
RECORDING_SECONDS = 30
LOW_LOAD_RECORDINGS = 30
LARGE_BYTES = 1024**3
# issue 14: each target a ratio to the raw put measured in the same run
TARGETS = {
    "ratio_min": 0.35,  # pipeline rec/s / raw put rec/s
    "ratio_goal": 0.5,
    "cpu_ratio_max": 1.25,  # serve CPU per recording / (bench client + SeaweedFS) CPU per raw put
    "low_load_ratio_max": 3.0,  # low-load p50 202 -> webhook / p50 of one raw put
    "large_rss_growth_mb_max": 64.0,
    "large_encrypted_rss_growth_mb_max": 64.0,
}
# which connection the recordings go to: a customer bucket (SeaweedFS) or the default store
STORAGE_VARIANTS = {"custom": ["custom"], "default": ["default"], "both": ["custom", "default"]}
# --egress-guard: a public address inside the bench's own network namespace (on its loopback)
PUBLIC_ADDRESS = "11.22.33.44"
INSIDE_NETNS_ENV = "BENCH_PIPELINE_IN_NETNS"


# ------------------------------------------------------------------------------------------
# the client side: multipart bodies, ingest, webhooks


def ingest_metadata(connection_id: str, seconds: float) -> dict[str, Any]:
    leg = str(uuid.uuid4())
    ended = datetime.now(UTC)
    started = ended - timedelta(seconds=seconds)
    return {
        "connection_id": connection_id,
        "call_control_id": f"v3:{leg}",
        "call_leg_id": leg,
        "call_session_id": str(uuid.uuid4()),
        "format": "wav",
        "channels": "single",
        "recording_started_at": started.isoformat(),
        "recording_ended_at": ended.isoformat(),
        "client_state": None,
    }


def multipart_head(metadata: dict[str, Any]) -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="metadata"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(metadata)}\r\n"
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="audio"; filename="recording.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


MULTIPART_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


class Webhooks:
    """Arrival times of `call.recording.saved` per recording id, read off the receiver."""

    def __init__(self, receiver: WebhookReceiver | PlainReceiver) -> None:
        self.receiver = receiver
        self.arrived: dict[str, float] = {}
        self.errors: list[str] = []
        self._seen = 0

    def poll(self) -> None:
        deliveries = self.receiver.received()
        for delivery in deliveries[self._seen :]:
            recording_id = str(delivery.payload["recording_id"])
            if delivery.event_type != "call.recording.saved":
                self.errors.append(f"{recording_id}: {delivery.event_type}")
            self.arrived.setdefault(recording_id, delivery.received_at)
        self._seen = len(deliveries)

    async def wait_all(self, ids: set[str], within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            self.poll()
            if self.errors:
                raise RuntimeError(f"error webhooks: {self.errors[:3]}")
            missing = ids - self.arrived.keys()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(missing)} webhook(s) missing after {within} s")
            await asyncio.sleep(0.002)


@dataclass
class Bench:
    serve: ServeProcess
    account: BenchAccount
    client: httpx.AsyncClient
    webhooks: Webhooks

    async def ingest(self, audio: bytes, seconds: float) -> tuple[str, float]:
        """POST one recording; (recording id, monotonic time the 202 arrived)."""
        body = multipart_head(ingest_metadata(self.account.connection_id, seconds))
        response = await self.client.post(
            "/internal/v1/recordings",
            content=body + audio + MULTIPART_TAIL,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        accepted = time.monotonic()
        if response.status_code != 202:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")
        return str(response.json()["data"]["id"]), accepted


async def run_concurrently(
    count: int, concurrency: int, job: Callable[[int], Awaitable[None]]
) -> None:
    """Jobs 0..count-1, `concurrency` at a time (each runner takes the next index)."""
    indexes = iter(range(count))

    async def runner() -> None:
        for index in indexes:
            await job(index)

    await asyncio.gather(*(runner() for _ in range(concurrency)))


# ------------------------------------------------------------------------------------------
# throughput: pipeline vs raw, alternating


@dataclass
class PipelineRound:
    seconds: float
    recordings_per_s: float
    mb_per_s: float
    cpu_s_per_recording: float
    latency_p50_ms: float
    latency_p99_ms: float
    # where the rest of the two cores went (to explain the ratio): SeaweedFS and this process
    seaweedfs_cpu_s_per_recording: float
    client_cpu_s_per_recording: float
    # the serve process's CPU by thread: the event loop (tid = pid) and the others by OS name
    serve_cpu_ms_per_recording_by_thread: dict[str, float]
    # the group commit (batch_writer.py) from the serve's /metrics: its commits per recording
    # and the writes each carried on average; None where the tree counts none
    group_commits_per_recording: float | None = None
    units_per_group_commit: float | None = None


@dataclass
class RawRound:
    seconds: float
    recordings_per_s: float
    mb_per_s: float
    seaweedfs_cpu_s_per_recording: float
    client_cpu_s_per_recording: float


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (threads included); this process when pid is None."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def pipeline_round(
    bench: Bench, files: list[bytes], concurrency: int, seaweed_pid: int | None
) -> PipelineRound:
    accepted: dict[str, float] = {}
    commits_before = bench.serve.counter(GROUP_COMMITS)
    units_before = bench.serve.counter(GROUP_COMMIT_UNITS)
    cpu_before = bench.serve.cpu_seconds()
    threads_before = bench.serve.cpu_by_thread()
    seaweed_before = process_cpu_seconds(seaweed_pid)
    client_before = process_cpu_seconds(None)
    started = time.monotonic()

    async def one(index: int) -> None:
        recording_id, at = await bench.ingest(files[index], RECORDING_SECONDS)
        accepted[recording_id] = at

    await run_concurrently(len(files), concurrency, one)
    await bench.webhooks.wait_all(set(accepted), within=600)
    last = max(bench.webhooks.arrived[rid] for rid in accepted)
    # the worker deletes each staging copy after its webhook: let it finish before reading CPU
    await asyncio.sleep(0.5)
    cpu = bench.serve.cpu_seconds() - cpu_before
    threads = {
        name: round((seconds - threads_before.get(name, 0.0)) * 1000 / len(files), 2)
        for name, seconds in bench.serve.cpu_by_thread().items()
    }
    seaweed_cpu = process_cpu_seconds(seaweed_pid) - seaweed_before
    client_cpu = process_cpu_seconds(None) - client_before
    commits, units = group_commits(bench, commits_before, units_before)
    elapsed = last - started
    latencies = [(bench.webhooks.arrived[rid] - at) * 1000 for rid, at in accepted.items()]
    total_mb = sum(len(f) for f in files) / 1e6
    return PipelineRound(
        seconds=elapsed,
        recordings_per_s=len(files) / elapsed,
        mb_per_s=total_mb / elapsed,
        cpu_s_per_recording=cpu / len(files),
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        seaweedfs_cpu_s_per_recording=seaweed_cpu / len(files),
        client_cpu_s_per_recording=client_cpu / len(files),
        serve_cpu_ms_per_recording_by_thread=threads,
        group_commits_per_recording=None if commits is None else round(commits / len(files), 3),
        units_per_group_commit=None if not commits or units is None else round(units / commits, 2),
    )


GROUP_COMMITS = "callvault_group_commits_total"
GROUP_COMMIT_UNITS = "callvault_group_commit_units_total"


def group_commits(
    bench: Bench, commits_before: float | None, units_before: float | None
) -> tuple[float | None, float | None]:
    """The group commits made since the counts before, and the units they carried."""
    commits, units = bench.serve.counter(GROUP_COMMITS), bench.serve.counter(GROUP_COMMIT_UNITS)
    if commits is None or units is None or commits_before is None or units_before is None:
        return None, None
    return commits - commits_before, units - units_before


def median_or_none(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 3) if known else None


async def raw_round(
    store: S3Store, paths: list[Path], concurrency: int, prefix: str, seaweed_pid: int | None
) -> RawRound:
    seaweed_before = process_cpu_seconds(seaweed_pid)
    client_before = process_cpu_seconds(None)
    started = time.monotonic()

    async def one(index: int) -> None:
        await obstore.put_async(
            store, f"{prefix}/{index}", paths[index], attributes={"Content-Type": "audio/wav"}
        )

    await run_concurrently(len(paths), concurrency, one)
    elapsed = time.monotonic() - started
    seaweed_cpu = process_cpu_seconds(seaweed_pid) - seaweed_before
    client_cpu = process_cpu_seconds(None) - client_before
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    return RawRound(
        seconds=elapsed,
        recordings_per_s=len(paths) / elapsed,
        mb_per_s=total_mb / elapsed,
        seaweedfs_cpu_s_per_recording=seaweed_cpu / len(paths),
        client_cpu_s_per_recording=client_cpu / len(paths),
    )


def raw_store(seaweed: SeaweedFS) -> S3Store:
    return S3Store(
        BUCKET,
        config={
            "endpoint": seaweed.endpoint,
            "region": seaweed.region,
            "access_key_id": seaweed.access_key,
            "secret_access_key": seaweed.secret_key,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )


async def throughput(
    bench: Bench, seaweed: SeaweedFS, tmp: Path, recordings: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    files = [wav_bytes(RECORDING_SECONDS, seed=i) for i in range(recordings)]
    paths = []
    for i, audio in enumerate(files):
        path = tmp / f"rec-{i}.wav"
        path.write_bytes(audio)
        paths.append(path)
    store = raw_store(seaweed)
    # warm-up: imports, connections, SQLite pages, obstore clients on both sides
    pid = seaweed.pid
    await pipeline_round(bench, files[: min(10, recordings)], concurrency, pid)
    await raw_round(store, paths[: min(10, recordings)], concurrency, "raw/warmup", pid)

    pipeline: list[PipelineRound] = []
    raw: list[RawRound] = []
    ratios: list[float] = []
    cpu_ratios: list[float] = []  # serve CPU per recording / CPU of one raw put (client + S3)
    for n in range(rounds):
        # alternate the order so that neither always runs on a warmer (or busier) machine
        if n % 2 == 0:
            p = await pipeline_round(bench, files, concurrency, pid)
            r = await raw_round(store, paths, concurrency, f"raw/{n}", pid)
        else:
            r = await raw_round(store, paths, concurrency, f"raw/{n}", pid)
            p = await pipeline_round(bench, files, concurrency, pid)
        pipeline.append(p)
        raw.append(r)
        ratios.append(p.recordings_per_s / r.recordings_per_s)
        raw_cpu = r.seaweedfs_cpu_s_per_recording + r.client_cpu_s_per_recording
        cpu_ratios.append(p.cpu_s_per_recording / raw_cpu)
        print(
            f"  round {n + 1}: pipeline {p.recordings_per_s:6.1f} rec/s  raw "
            f"{r.recordings_per_s:6.1f} rec/s  ratio {ratios[-1]:.2f}  "
            f"cpu ratio {cpu_ratios[-1]:.2f}  "
            f"cpu {p.cpu_s_per_recording * 1000:.1f} ms/rec "
            f"{p.serve_cpu_ms_per_recording_by_thread}  "
            f"commits/rec {p.group_commits_per_recording}  units/commit "
            f"{p.units_per_group_commit}  load {load_average():.2f}",
            file=sys.stderr,
        )

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    return {
        "recordings": recordings,
        "concurrency": concurrency,
        "rounds": rounds,
        "recording_bytes": len(files[0]),
        "pipeline": {
            "recordings_per_s": median([p.recordings_per_s for p in pipeline]),
            "mb_per_s": median([p.mb_per_s for p in pipeline]),
            "cpu_s_per_recording": median([p.cpu_s_per_recording for p in pipeline]),
            "latency_p50_ms": median([p.latency_p50_ms for p in pipeline]),
            "latency_p99_ms": median([p.latency_p99_ms for p in pipeline]),
            "seaweedfs_cpu_s_per_recording": median(
                [p.seaweedfs_cpu_s_per_recording for p in pipeline]
            ),
            "client_cpu_s_per_recording": median([p.client_cpu_s_per_recording for p in pipeline]),
            "group_commits_per_recording": median_or_none(
                [p.group_commits_per_recording for p in pipeline]
            ),
            "units_per_group_commit": median_or_none([p.units_per_group_commit for p in pipeline]),
        },
        "raw": {
            "recordings_per_s": median([r.recordings_per_s for r in raw]),
            "mb_per_s": median([r.mb_per_s for r in raw]),
            "seaweedfs_cpu_s_per_recording": median([r.seaweedfs_cpu_s_per_recording for r in raw]),
            "client_cpu_s_per_recording": median([r.client_cpu_s_per_recording for r in raw]),
        },
        "ratio": median(ratios),
        "cpu_ratio": median(cpu_ratios),
        "serve_peak_rss_mb": round(bench.serve.status_mb("VmHWM"), 1),
        "rounds_detail": {
            "pipeline": [asdict(p) for p in pipeline],
            "raw": [asdict(r) for r in raw],
            "ratios": [round(x, 4) for x in ratios],
            "cpu_ratios": [round(x, 4) for x in cpu_ratios],
        },
    }


# ------------------------------------------------------------------------------------------
# low load: one at a time


async def raw_low_load(store: S3Store, path: Path, count: int) -> list[float]:
    """One raw put at a time (the same file, idle between puts): each put's latency in ms."""
    for n in range(3):  # warm-up: connection, not counted
        await obstore.put_async(store, f"raw-low/warmup-{n}", path)
    latencies = []
    for n in range(count):
        started = time.monotonic()
        await obstore.put_async(
            store, f"raw-low/{n}", path, attributes={"Content-Type": "audio/wav"}
        )
        latencies.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(0.05)
    return latencies


async def low_load(bench: Bench, count: int, seaweed: SeaweedFS, tmp: Path) -> dict[str, Any]:
    audio = wav_bytes(RECORDING_SECONDS, seed=7)
    raw_path = tmp / "low-load.wav"
    raw_path.write_bytes(audio)
    raw = await raw_low_load(raw_store(seaweed), raw_path, count)
    for _ in range(3):  # warm-up, not counted
        recording_id, _at = await bench.ingest(audio, RECORDING_SECONDS)
        await bench.webhooks.wait_all({recording_id}, within=60)
    latencies = []
    measured = []
    acks_before = delayed_acks()
    cpu_before = bench.serve.cpu_seconds()
    for _ in range(count):
        recording_id, at = await bench.ingest(audio, RECORDING_SECONDS)
        await bench.webhooks.wait_all({recording_id}, within=60)
        latencies.append((bench.webhooks.arrived[recording_id] - at) * 1000)
        measured.append(recording_id)
        await asyncio.sleep(0.05)  # idle between calls, as at low load
    acks = delayed_acks() - acks_before
    cpu = bench.serve.cpu_seconds() - cpu_before  # the idle gaps included (a few % of it)
    raw += await raw_low_load(raw_store(seaweed), raw_path, count)  # before and after
    p50 = percentile(latencies, 50)
    raw_p50 = percentile(raw, 50)
    arrivals = {rid: bench.webhooks.arrived[rid] + WALL_MINUS_MONOTONIC for rid in measured}
    return {
        "recordings": count,
        "latency_p50_ms": round(p50, 2),
        "latency_p99_ms": round(percentile(latencies, 99), 2),
        "latency_max_ms": round(max(latencies), 2),
        "raw_put_p50_ms": round(raw_p50, 2),
        "raw_put_p99_ms": round(percentile(raw, 99), 2),
        "latency_ratio": round(p50 / raw_p50, 2),
        "serve_cpu_ms_per_recording": round(cpu * 1000 / count, 2),
        "hops_p50_ms": hops_from_log(bench.serve.log_path, arrivals),
        # only this bench's connections when it runs in its own network namespace
        "delayed_acks_per_recording": (
            round(acks / count, 2) if os.environ.get(INSIDE_NETNS_ENV) else None
        ),
    }


def delayed_acks() -> int:
    """TcpExt DelayedACKs of this network namespace: how often a delayed-ACK timer fired (the
    40 ms stall of Nagle against a delayed ACK needs one)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["DelayedACKs"])
    return 0


# time.time() - time.monotonic(): the receiver's arrival times on the serve log's clock
WALL_MINUS_MONOTONIC = time.time() - time.monotonic()
HOPS = (
    "received -> upload started",
    "upload started -> stored",
    "stored -> webhook at receiver",
    "webhook request (client)",
    "webhook at receiver -> round logged",
)


def serve_log_events(path: Path) -> list[tuple[float, dict[str, Any]]]:
    """(wall time, line) of every JSON line of a serve log that has an event and a timestamp."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        if isinstance(fields, dict) and "event" in fields and "timestamp" in fields:
            events.append((datetime.fromisoformat(fields["timestamp"]).timestamp(), fields))
    return events


def hops_from_log(path: Path, arrivals: dict[str, float]) -> dict[str, float]:
    """p50 of each hop (HOPS) over the recordings in `arrivals` (recording id -> wall time the
    receiver had the webhook), one at a time: a recording's round is the first `webhook
    delivered` line after its `recording stored`."""
    events = serve_log_events(path)
    times: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for recording_id, arrived in arrivals.items():
        mine = {f["event"]: t for t, f in events if f.get("recording_id") == recording_id}
        stored = mine.get("recording stored")
        if stored is None or "recording received" not in mine:
            continue
        rounds = [(t, f) for t, f in events if t >= stored and f["event"] == "webhook delivered"]
        if not rounds:
            continue
        round_at, round_line = rounds[0]
        upload = mine.get("upload started", mine["recording received"])
        times["received -> upload started"].append(upload - mine["recording received"])
        times["upload started -> stored"].append(stored - upload)
        times["stored -> webhook at receiver"].append(arrived - stored)
        times["webhook request (client)"].append(round_line["latency_ms"][0] / 1000)
        times["webhook at receiver -> round logged"].append(round_at - arrived)
    return {hop: round(percentile(v, 50) * 1000, 2) for hop, v in times.items() if v}


# ------------------------------------------------------------------------------------------
# one 1 GiB recording


def write_large_wav(path: Path, size: int) -> None:
    data_bytes = size - 44
    block = wav_bytes(64, seed=3)[44:]  # 1 MiB of samples (64 s at 16 KB/s)
    with path.open("wb") as out:
        out.write(wav_header(data_bytes))
        written = 0
        n = 0
        while written < data_bytes:
            # vary each block so nothing along the way can deduplicate it
            piece = (n.to_bytes(8, "little") + block[8:])[: data_bytes - written]
            out.write(piece)
            written += len(piece)
            n += 1


async def file_body(head: bytes, path: Path) -> AsyncIterator[bytes]:
    yield head
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, 1024 * 1024):
            yield chunk
    yield MULTIPART_TAIL


async def large(bench: Bench, tmp: Path) -> dict[str, Any]:
    path = tmp / "large.wav"
    await asyncio.to_thread(write_large_wav, path, LARGE_BYTES)
    # warm-up through the whole pipeline (imports, store clients), then the baseline
    small = wav_bytes(RECORDING_SECONDS, seed=11)
    for _ in range(3):
        recording_id, _at = await bench.ingest(small, RECORDING_SECONDS)
        await bench.webhooks.wait_all({recording_id}, within=60)
    await asyncio.sleep(1.0)
    baseline = bench.serve.status_mb("VmRSS")
    peak_was_reset = bench.serve.reset_peak()
    head = multipart_head(ingest_metadata(bench.account.connection_id, LARGE_BYTES / 16000))
    length = len(head) + LARGE_BYTES + len(MULTIPART_TAIL)
    started = time.monotonic()
    response = await bench.client.post(
        "/internal/v1/recordings",
        content=file_body(head, path),
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(length),
        },
        timeout=httpx.Timeout(1200.0),
    )
    accepted = time.monotonic()
    if response.status_code != 202:
        raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:300]}")
    recording_id = str(response.json()["data"]["id"])
    await bench.webhooks.wait_all({recording_id}, within=1200)
    done = bench.webhooks.arrived[recording_id]
    peak = bench.serve.status_mb("VmHWM")
    path.unlink()
    return {
        "bytes": LARGE_BYTES,
        "ingest_seconds": round(accepted - started, 2),
        "upload_and_webhook_seconds": round(done - accepted, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_was_reset": peak_was_reset,
        "rss_growth_mb": round(peak - baseline, 1),
    }


# ------------------------------------------------------------------------------------------


@dataclass
class Environment:
    tmp: Path
    seaweed: SeaweedFS
    receiver: WebhookReceiver | PlainReceiver
    webhooks: Webhooks
    profile: Path | None = None
    profile_native: bool = False
    src: Path | None = None
    egress_guard: bool = False


async def with_serve(
    env: Environment,
    name: str,
    run: Callable[[Bench], Awaitable[Any]],
    encrypt: bool = False,
    custom: bool = True,
) -> Any:
    """A fresh `callvault serve` (own data dir) with an account whose connection stores in
    the SeaweedFS bucket (`custom`; else in the default store, the local directory) and whose
    recordings are encrypted for a customer key when `encrypt`; `run(bench)`, then the
    server is stopped."""
    base = env.tmp / name
    base.mkdir()
    guard_env = {
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "false",
        "AWS_ENDPOINT_URL": env.seaweed.endpoint,  # the operator's endpoint: the guard trusts it
    }
    with ServeProcess(
        base, src=env.src, extra_env=guard_env if env.egress_guard else None
    ) as serve:
        account = serve.create_account(env.receiver.url())
        if custom and env.egress_guard:
            serve.set_credentials(
                account,
                "s3",
                {
                    "bucket": BUCKET,
                    "region": env.seaweed.region,
                    "aws_access_key_id": env.seaweed.access_key,
                    "aws_secret_access_key": env.seaweed.secret_key,
                },
            )
        elif custom:
            serve.set_credentials(
                account,
                "s3-generic",
                {
                    "bucket": BUCKET,
                    "region": env.seaweed.region,
                    "aws_access_key_id": env.seaweed.access_key,
                    "aws_secret_access_key": env.seaweed.secret_key,
                    "endpoint": env.seaweed.endpoint,
                },
            )
        if encrypt:
            use_encryption_key(serve, account)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=serve.url,
            headers={"Authorization": f"Bearer {serve.ingest_token}"},
            timeout=httpx.Timeout(120.0),
            limits=limits,
        ) as client:
            bench = Bench(serve, account, client, env.webhooks)
            try:
                if env.profile is None:
                    return await run(bench)
                output = env.profile.with_name(f"{env.profile.stem}-{name}{env.profile.suffix}")
                with Profiler(serve.pid, output.resolve(), native=env.profile_native):
                    return await run(bench)
            except Exception:
                print(f"serve log ({name}):\n{serve.log_tail()}", file=sys.stderr)
                raise


async def run_modes(args: argparse.Namespace, modes: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callvault-bench-") as tmp_name:
        tmp = Path(tmp_name)
        host = PUBLIC_ADDRESS if args.egress_guard else "127.0.0.1"
        chosen: WebhookReceiver | PlainReceiver = WebhookReceiver(host)
        if args.receiver != "suite":
            chosen = PlainReceiver(host, keep_alive=args.receiver == "plain-keepalive")
        with SeaweedFS(tmp / "seaweedfs") as seaweed, chosen as receiver:
            seaweed.create_bucket(BUCKET)
            if isinstance(receiver, WebhookReceiver):
                # a webhook connection the server closes at its shutdown is no error to trace
                receiver._server.handle_error = lambda *_: None  # type: ignore[method-assign]
            env = Environment(
                tmp,
                seaweed,
                receiver,
                Webhooks(receiver),
                args.profile,
                args.profile_native,
                args.src,
                args.egress_guard,
            )
            results: dict[str, Any] = {
                "load_average_start": round(load_average(), 2),
                "receiver": args.receiver,
                "egress_guard": args.egress_guard,
            }
            variants = {"off": [False], "on": [True], "both": [False, True]}[args.encryption]
            for encrypt in variants:
                for storage in STORAGE_VARIANTS[args.storage]:
                    custom = storage == "custom"
                    suffix = variant_suffix(encrypt, custom)
                    await run_variant(args, modes, env, results, suffix, encrypt, custom)
            results["load_average_end"] = round(load_average(), 2)
            results["targets"] = TARGETS
            return results


def variant_suffix(encrypt: bool, custom: bool) -> str:
    return ("_encrypted" if encrypt else "") + ("" if custom else "_default_store")


async def run_variant(
    args: argparse.Namespace,
    modes: list[str],
    env: Environment,
    results: dict[str, Any],
    suffix: str,
    encrypt: bool,
    custom: bool,
) -> None:
    if "throughput" in modes:
        print(f"throughput{suffix} ...", file=sys.stderr)

        async def run_throughput(bench: Bench) -> Any:
            return await throughput(
                bench, env.seaweed, env.tmp, args.recordings, args.concurrency, args.rounds
            )

        results["throughput" + suffix] = await with_serve(
            env, "throughput" + suffix, run_throughput, encrypt, custom
        )
    if "latency" in modes:
        print(f"low-load latency{suffix} ...", file=sys.stderr)

        async def run_latency(bench: Bench) -> Any:
            return await low_load(bench, args.low_load_recordings, env.seaweed, env.tmp)

        results["low_load" + suffix] = await with_serve(
            env, "latency" + suffix, run_latency, encrypt, custom
        )
    if "large" in modes and custom:  # the 1 GiB recording goes to the customer bucket
        print(f"1 GiB recording{suffix} ...", file=sys.stderr)

        async def run_large(bench: Bench) -> Any:
            return await large(bench, env.tmp)

        results["large" + suffix] = await with_serve(
            env, "large" + suffix, run_large, encrypt, custom
        )


MODE_KEYS = ("throughput", "low_load", "large")


def report_variant(results: dict[str, Any], suffix: str) -> tuple[list[str], bool]:
    lines: list[str] = []
    failed = False
    if not any(key.endswith(suffix) for key in results if key.startswith(MODE_KEYS)):
        return lines, failed
    where = "default store" if suffix.endswith("_default_store") else "custom storage (S3)"
    sealed = ", encrypted (RSA-OAEP-SHA256 + AES-256-GCM)" if "_encrypted" in suffix else ""
    lines.append(f"== {where}{sealed}")
    if t := results.get("throughput" + suffix):
        p, r = t["pipeline"], t["raw"]
        lines += [
            f"throughput: {t['recordings']} recordings of {t['recording_bytes'] / 1e3:.0f} KB, "
            f"concurrency {t['concurrency']}, median of {t['rounds']} rounds",
            f"  pipeline (ingest -> webhook): {p['recordings_per_s']:7.1f} rec/s "
            f"{p['mb_per_s']:6.1f} MB/s",
            f"  raw obstore put:              {r['recordings_per_s']:7.1f} rec/s "
            f"{r['mb_per_s']:6.1f} MB/s",
            f"  ratio:                        {t['ratio']:.2f}   "
            f"(target >= {TARGETS['ratio_min']}, goal {TARGETS['ratio_goal']})",
            f"  serve CPU per recording:      {p['cpu_s_per_recording'] * 1000:.1f} ms",
            f"  CPU of one raw put:           "
            f"{(r['seaweedfs_cpu_s_per_recording'] + r['client_cpu_s_per_recording']) * 1000:.1f}"
            " ms (bench client + SeaweedFS)",
            f"  CPU ratio:                    {t['cpu_ratio']:.2f}   "
            f"(serve / raw put, target <= {TARGETS['cpu_ratio_max']})",
            "  other CPU per recording:      SeaweedFS "
            f"{p['seaweedfs_cpu_s_per_recording'] * 1000:.1f} ms (raw put: "
            f"{r['seaweedfs_cpu_s_per_recording'] * 1000:.1f} ms), bench client "
            f"{p['client_cpu_s_per_recording'] * 1000:.1f} ms (raw put: "
            f"{r['client_cpu_s_per_recording'] * 1000:.1f} ms)",
            f"  latency 202 -> webhook:       p50 {p['latency_p50_ms']:.0f} ms  "
            f"p99 {p['latency_p99_ms']:.0f} ms (under load)",
            f"  serve peak RSS:               {t['serve_peak_rss_mb']:.0f} MB (VmHWM)",
            f"  group commits per recording:  {p.get('group_commits_per_recording')}, "
            f"{p.get('units_per_group_commit')} writes each",
        ]
        failed |= t["ratio"] < TARGETS["ratio_min"]
        failed |= t["cpu_ratio"] > TARGETS["cpu_ratio_max"]
    if low := results.get("low_load" + suffix):
        lines.append(
            f"low load ({low['recordings']} one at a time): 202 -> webhook p50 "
            f"{low['latency_p50_ms']:.1f} ms  p99 {low['latency_p99_ms']:.1f} ms; one raw put "
            f"p50 {low['raw_put_p50_ms']:.1f} ms; ratio {low['latency_ratio']:.2f} "
            f"(target <= {TARGETS['low_load_ratio_max']:.0f})"
        )
        failed |= low["latency_ratio"] > TARGETS["low_load_ratio_max"]
        hops = "; ".join(f"{hop} {ms:.1f}" for hop, ms in low.get("hops_p50_ms", {}).items())
        lines.append(f"  hops (p50 ms, serve log): {hops}")
        lines.append(f"  serve CPU per recording: {low['serve_cpu_ms_per_recording']:.1f} ms")
        if low.get("delayed_acks_per_recording") is not None:
            lines.append(
                f"  delayed ACKs per recording (TcpExt, own netns): "
                f"{low['delayed_acks_per_recording']}"
            )
    if big := results.get("large" + suffix):
        target = (
            "large_encrypted_rss_growth_mb_max"
            if "_encrypted" in suffix
            else ("large_rss_growth_mb_max")
        )
        lines.append(
            f"1 GiB recording: ingest {big['ingest_seconds']} s, upload + webhook "
            f"{big['upload_and_webhook_seconds']} s, serve RSS {big['baseline_rss_mb']} -> "
            f"peak {big['peak_rss_mb']} MB: growth {big['rss_growth_mb']} MB "
            f"(target <= {TARGETS[target]:.0f} MB)"
        )
        failed |= big["rss_growth_mb"] > TARGETS[target]
    return lines, failed


def report(results: dict[str, Any]) -> list[str]:
    lines = []
    failed = False
    for suffix in ("", "_default_store", "_encrypted", "_encrypted_default_store"):
        part, part_failed = report_variant(results, suffix)
        lines += part
        failed |= part_failed

    lines.append(
        f"receiver {results['receiver']}, egress guard {'on' if results['egress_guard'] else 'off'}"
    )
    lines.append(
        f"load average {results['load_average_start']} -> {results['load_average_end']} "
        "(2 shared cores: re-run when it is high)"
    )
    results["met_targets"] = not failed
    lines.append("targets met" if not failed else "TARGETS NOT MET")
    return lines


def rerun_in_netns() -> int:
    """This command again, in a private network namespace with PUBLIC_ADDRESS on loopback."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("--egress-guard needs root and unshare (a private network namespace)")
    inner = shlex.join([sys.executable, *sys.argv])
    script = f"ip link set lo up && ip addr add {PUBLIC_ADDRESS}/32 dev lo && exec {inner}"
    env = {**os.environ, INSIDE_NETNS_ENV: "1"}
    return subprocess.run(["unshare", "--net", "sh", "-c", script], env=env).returncode


def main() -> int:
    global RECORDING_SECONDS  # --recording-seconds
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=200, help="K (throughput mode)")
    parser.add_argument("--concurrency", type=int, default=8, help="C (throughput mode)")
    parser.add_argument("--rounds", type=int, default=3, help="pipeline/raw rounds")
    parser.add_argument("--low-load-recordings", type=int, default=LOW_LOAD_RECORDINGS)
    parser.add_argument(
        "--recording-seconds",
        type=float,
        default=RECORDING_SECONDS,
        help="length of the generated WAVs (30 s = 480 KB; 0.5 s = 8 KB)",
    )
    parser.add_argument(
        "--mode", default="throughput,latency", help="throughput,latency,large or all"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--storage",
        choices=sorted(STORAGE_VARIANTS),
        default="both",
        help="the connection's storage: a customer bucket, the default store, or each in turn",
    )
    parser.add_argument(
        "--encryption",
        choices=["off", "on", "both"],
        default="off",
        help="encrypt recordings for a customer key (both: each mode without, then with)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the serve process into FILE-<mode>.EXT (.svg flame graph, .json "
        "speedscope, else collapsed stacks)",
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native")
    parser.add_argument(
        "--receiver",
        choices=["suite", "plain", "plain-keepalive"],
        default="suite",
        help="the webhook receiver: tests/receiver.py (HTTP/1.1, in this process) or "
        "bench/plain_receiver.py in its own process (http.server's defaults: HTTP/1.0; "
        "plain-keepalive: HTTP/1.1)",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        help="run in a private network namespace (root; --egress-guard implies it): the "
        "latency mode then counts the delayed ACKs of its own connections",
    )
    parser.add_argument(
        "--egress-guard",
        action="store_true",
        help="serve refuses private networks: storage through the egress guard, SeaweedFS as "
        "AWS_ENDPOINT_URL (runs in a network namespace: root)",
    )
    parser.add_argument(
        "--src", type=Path, help="run the server from this src/ dir (before/after comparisons)"
    )
    args = parser.parse_args()
    RECORDING_SECONDS = args.recording_seconds  # read by every mode when it builds its files
    modes = (
        ["throughput", "latency", "large"]
        if args.mode == "all"
        else [m.strip() for m in args.mode.split(",") if m.strip()]
    )
    unknown = set(modes) - {"throughput", "latency", "large"}
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    if (args.egress_guard or args.netns) and not os.environ.get(INSIDE_NETNS_ENV):
        return rerun_in_netns()
    results = asyncio.run(run_modes(args, modes))
    lines = report(results)
    if args.json:
        print(json.dumps(results))
    else:
        print("\n".join(lines))
    return 0 if results["met_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
