"""Peak memory of uploading a large recording through the s3-generic store.

    .venv/bin/python bench/upload_memory.py [--size-mb 500]

Starts SeaweedFS (tests/servers.py), writes a file of --size-mb, and uploads it from a fresh
child process that reads its own /proc/self/status: the baseline is its RSS once callvault and
obstore are imported and the store is open, the peak is VmHWM after the upload (reset first via
/proc/self/clear_refs where the kernel allows). PASS when the peak grew by less than 100 MB:
memory must be bounded by part size x concurrency, not by the file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 100.0
BUCKET = "bench"
KEY = "bench/2022-02-02/leg-1643805460"


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB -> MB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def child_upload(
    endpoint: str, access_key: str, secret_key: str, file: Path, tuning: dict[str, int]
) -> dict:
    from callvault.storage import open_custom_store

    store = open_custom_store(
        "s3-generic",
        {
            "bucket": BUCKET,
            "region": "us-east-1",
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "endpoint": endpoint,
        },
        allow_private_networks=True,
    )
    for name, value in tuning.items():
        setattr(store, name, value)
    baseline = status_mb("VmRSS")
    peak_was_reset = reset_peak()
    started = time.monotonic()
    await store.put_file(KEY, file, content_type="audio/wav", metadata={"purpose": "bench"})
    elapsed = time.monotonic() - started
    peak = status_mb("VmHWM")
    info = await store.head(KEY)
    await store.delete(KEY)
    # let obstore's runtime threads finish waking this loop before the interpreter exits: a
    # thread still doing so during finalization aborts the process (pyo3-async-runtimes race)
    await asyncio.sleep(0.2)
    return {
        "baseline_mb": baseline,
        "peak_mb": peak,
        "peak_was_reset": peak_was_reset,
        "seconds": elapsed,
        "uploaded_bytes": info.size if info else None,
        "part_size": getattr(store, "part_size", None),
        "max_concurrency": getattr(store, "max_concurrency", None),
    }


def make_file(path: Path, size_mb: int) -> None:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as out:
        for i in range(size_mb):
            # vary each MiB a little so nothing along the way can deduplicate it
            out.write(i.to_bytes(8, "big") + block[8:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--part-size-mb", type=int, help="override the store's part size")
    parser.add_argument("--concurrency", type=int, help="override the store's parts in flight")
    parser.add_argument("--child", nargs=4, metavar=("ENDPOINT", "AK", "SK", "FILE"))
    args = parser.parse_args()

    if args.child:
        endpoint, access_key, secret_key, file = args.child
        tuning = {}
        if args.part_size_mb:
            tuning["part_size"] = args.part_size_mb * 1024 * 1024
        if args.concurrency:
            tuning["max_concurrency"] = args.concurrency
        result = asyncio.run(child_upload(endpoint, access_key, secret_key, Path(file), tuning))
        print(json.dumps(result))
        return 0

    sys.path.insert(0, str(REPO_ROOT))
    from tests.servers import SeaweedFS

    with tempfile.TemporaryDirectory(prefix="callvault-bench-") as tmp:
        file = Path(tmp) / "recording.wav"
        make_file(file, args.size_mb)
        with SeaweedFS(Path(tmp) / "seaweedfs") as server:
            server.create_bucket(BUCKET)
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    server.endpoint,
                    server.access_key,
                    server.secret_key,
                    str(file),
                    *(["--part-size-mb", str(args.part_size_mb)] if args.part_size_mb else []),
                    *(["--concurrency", str(args.concurrency)] if args.concurrency else []),
                ],
                capture_output=True,
                text=True,
                check=False,
                cwd=REPO_ROOT,
            )
        if child.returncode != 0:
            print(child.stdout, child.stderr, sep="\n", file=sys.stderr)
            print(f"FAIL: the upload process exited with {child.returncode}")
            return 1
        result = json.loads(child.stdout.strip().splitlines()[-1])

    growth = result["peak_mb"] - result["baseline_mb"]
    size = args.size_mb * 1024 * 1024
    complete = result["uploaded_bytes"] == size
    print(f"file:          {args.size_mb} MiB ({size} bytes), uploaded {result['uploaded_bytes']}")
    print(f"parts:         {result['part_size'] / 2**20:g} MiB x {result['max_concurrency']}")
    print(
        f"upload time:   {result['seconds']:.2f} s ({args.size_mb / result['seconds']:.0f} MiB/s)"
    )
    print(f"baseline RSS:  {result['baseline_mb']:.1f} MB")
    print(f"peak RSS:      {result['peak_mb']:.1f} MB (VmHWM, reset={result['peak_was_reset']})")
    print(f"growth:        {growth:.1f} MB (limit {LIMIT_MB:g} MB)")
    passed = complete and growth < LIMIT_MB
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
