"""The media-server hand-off's cost (issue 22): CPU per call-minute to turn a G.711 call
(rtpengine's pcap spool) into a dual WAV and a mono MP3, as a multiple of real time on one
core, and the peak memory of a long call, in a fresh process per call length so that memory
flat in the call's length shows as equal peaks.

    .venv/bin/python bench/handoff.py [--minutes 10] [--long-minutes 120]

Goals: >= 300x real time for WAV, >= 50x for MP3; the peak for the long call within 10 MB of
the short one's. Exits 1 when a goal is missed. docs/media-servers.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.handoff.crafted import (
    CALLEE_ADDR,
    CALLER_ADDR,
    RELAY_TO_CALLEE,
    RELAY_TO_CALLER,
    T0_US,
    CraftedCall,
    tone,
)

from callvault.handoff import pcap
from callvault.handoff.convert import convert_call
from callvault.handoff.pcm import audioop
from callvault.handoff.rtp import build_rtp

WAV_GOAL, MP3_GOAL = 300.0, 50.0
FLAT_MB = 10.0


def synthesize(spool: Path, minutes: float, settings: str) -> Path:
    """A two-party G.711 call of `minutes`, written straight to the spool (packets streamed:
    the bench itself stays small). 1 % of packets arrive 30 ms late (reordering)."""
    call = CraftedCall(settings=settings)
    meta = call.write(spool, "bench")  # the metadata file and an empty pcap
    payloads = [
        [audioop.lin2ulaw(tone(hz, 160, n * 160), 2) for n in range(50)] for hz in (440, 1000)
    ]
    packets = int(minutes * 60 * 50)
    with (spool / "pcaps" / "bench.pcap").open("wb", buffering=1 << 20) as handle:
        pcap.write_header(handle)
        held: list[tuple[int, bytes]] = []
        for n in range(packets):
            at = T0_US + n * 20_000
            for party, (src, dst) in enumerate(
                ((RELAY_TO_CALLEE, CALLEE_ADDR), (RELAY_TO_CALLER, CALLER_ADDR))
            ):
                rtp = build_rtp(0, n, n * 160, 1000 + party, payloads[party][n % 50])
                body = pcap.raw_ipv4_udp(src, dst, rtp)
                if n % 100 == 7:
                    held.append((at + 30_000, body))
                    continue
                while held and held[0][0] <= at:
                    pcap.write_record(handle, *held.pop(0))
                pcap.write_record(handle, at, body)
        for late in held:
            pcap.write_record(handle, *late)
    return meta


def measure(minutes: float, fmt: str, channels: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-handoff-") as tmp:
        spool = Path(tmp) / "spool"
        meta = synthesize(spool, minutes, f"connection_id=1|format={fmt}|channels={channels}")
        work = Path(tmp) / "work"
        work.mkdir()
        started = time.process_time()
        wall = time.perf_counter()
        converted = convert_call(meta, work)
        cpu = time.process_time() - started
        wall = time.perf_counter() - wall
        seconds = converted.samples / converted.rate
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"call_seconds": seconds, "cpu_seconds": cpu, "wall_seconds": wall, "peak_mb": peak_mb}


def in_child(minutes: float, fmt: str, channels: str) -> dict[str, float]:
    """One measurement in a fresh interpreter: its peak RSS is this call's alone."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", f"{minutes}:{fmt}:{channels}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--long-minutes", type=float, default=120.0)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        minutes, fmt, channels = args.child.split(":")
        print(json.dumps(measure(float(minutes), fmt, channels)))
        return 0
    ok = True
    print(f"G.711 call of {args.minutes:g} min, one core (CPU time of the conversion):")
    for fmt, channels, goal in (("wav", "dual", WAV_GOAL), ("mp3", "single", MP3_GOAL)):
        result = in_child(args.minutes, fmt, channels)
        speed = result["call_seconds"] / result["cpu_seconds"]
        per_minute = result["cpu_seconds"] / (result["call_seconds"] / 60)
        verdict = "ok" if speed >= goal else "MISSED"
        ok &= speed >= goal
        print(
            f"  {channels} {fmt.upper()}: {speed:7.0f}x real time "
            f"({per_minute * 1000:6.1f} ms CPU per call-minute; goal >= {goal:g}x) {verdict}"
        )
    print("peak memory (RSS of a fresh process converting one call, dual WAV / mono MP3):")
    for fmt, channels in (("wav", "dual"), ("mp3", "single")):
        short = in_child(args.minutes, fmt, channels)
        long = in_child(args.long_minutes, fmt, channels)
        flat = long["peak_mb"] - short["peak_mb"] <= FLAT_MB
        ok &= flat
        print(
            f"  {fmt.upper()}: {args.minutes:g} min {short['peak_mb']:.1f} MB, "
            f"{args.long_minutes:g} min {long['peak_mb']:.1f} MB "
            f"({'flat' if flat else 'GROWS'}; goal: within {FLAT_MB:g} MB)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
