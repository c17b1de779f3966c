"""What every bench needs: `callvault serve` as a real child process on a fresh data dir,
its CPU time and memory from /proc, and an account + application set up over its HTTP API.

The server runs on the embedded defaults (SQLite file, local default store) with only
CALLVAULT_DATA_DIR set and CALLVAULT_ALLOW_PRIVATE_NETWORKS=true (SeaweedFS and the webhook
receiver listen on loopback). Its log goes to `{data_dir}/../serve.log`.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
# the suite's PostgreSQL (tests/conftest.py): benches make a database of their own in it
POSTGRES_ADMIN_DSN = os.environ.get(
    "CALLVAULT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BenchAccount:
    api_key: str
    account_id: str
    webhook_public_key: str
    connection_id: str


async def _postgres_admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new PostgreSQL database for one bench run, migrated with `callvault migrate` (serve
    migrates only the embedded SQLite file), dropped afterwards: its URL."""
    name = f"callvault_bench_{uuid.uuid4().hex[:12]}"
    await _postgres_admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "callvault", "migrate"],
            env={**env, "CALLVAULT_DATABASE_URL": url},
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        await _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServeProcess:
    """`python -m callvault serve --port P` with its own data dir; a context manager."""

    def __init__(
        self,
        base_dir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        src: Path | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        """`src`: run callvault from another source tree (a `src/` dir, e.g. an older commit
        unpacked with `git archive`) for before/after comparisons; default: the installed one."""
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "serve.log"
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")},
            "CALLVAULT_DATA_DIR": str(self.data_dir),
            "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
            **({"PYTHONPATH": str(src.resolve())} if src is not None else {}),
            **(extra_env or {}),
        }
        self.serve_args = serve_args  # e.g. ("--no-worker",)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "callvault",
            "serve",
            "--port",
            str(self.port),
            *self.serve_args,
        ]

    def start(self, timeout: float = 60.0) -> ServeProcess:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"callvault serve exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"callvault serve not ready:\n{self.log_tail()}")
            time.sleep(0.05)

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
            self._log = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counter(self, name: str) -> float | None:
        """A counter's value on the process's `GET /metrics` (None: it has no such counter,
        e.g. an older tree run with `src`, or no `/metrics` at all: bench/floor_server.py)."""
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        if not response.headers.get("content-type", "").startswith("text/plain"):
            return None  # not the Prometheus text format (a 404, or another route's JSON)
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def ingest_token(self) -> str:
        return (self.data_dir / "ingest.token").read_text().strip()

    # /proc figures of the serve process (threads included)
    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[11], fields[12]: utime, stime (fields 14 and 15 of proc(5))
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def cpu_by_thread(self) -> dict[str, float]:
        """CPU seconds of the event-loop thread (tid = pid) and of the others, by OS name
        (Python's own threads are all `python`; obstore's runtime threads are `tokio-*`)."""
        split: dict[str, float] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()
            own_name = stat[stat.index("(") + 1 : stat.rindex(")")]
            name = "event loop" if task.name == str(self.pid) else own_name
            split[name] = split.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return split

    def status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} not in /proc/{self.pid}/status")

    def reset_peak(self) -> bool:
        """Restart VmHWM from the current RSS (Linux >= 4.0; our own child, so allowed)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    # set-up over the pinned CLI and the HTTP API
    def create_account(self, webhook_url: str) -> BenchAccount:
        created = subprocess.run(
            [sys.executable, "-m", "callvault", "accounts", "create", "bench", "--json"],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        fields = json.loads(created.stdout.strip().splitlines()[-1])
        response = httpx.post(
            f"{self.url}/v2/call_control_applications",
            json={
                "application_name": "bench",
                "webhook_event_url": webhook_url,
                "webhook_api_version": "2",
            },
            headers={"Authorization": f"Bearer {fields['api_key']}"},
            timeout=10,
        )
        response.raise_for_status()
        return BenchAccount(
            api_key=fields["api_key"],
            account_id=fields["account_id"],
            webhook_public_key=fields["webhook_public_key"],
            connection_id=response.json()["data"]["id"],
        )

    def set_credentials(
        self, account: BenchAccount, backend: str, configuration: dict[str, Any]
    ) -> None:
        response = httpx.post(
            f"{self.url}/v2/custom_storage_credentials/{account.connection_id}",
            json={"backend": backend, "configuration": configuration},
            headers={"Authorization": f"Bearer {account.api_key}"},
            timeout=10,
        )
        response.raise_for_status()


def use_encryption_key(serve: ServeProcess, account: BenchAccount) -> str:
    """Register a fresh RSA-2048 public key and encrypt the account's recordings for it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    headers = {"Authorization": f"Bearer {account.api_key}"}
    response = httpx.post(
        f"{serve.url}/v2/recording_encryption_keys",
        json={"public_key": pem.decode(), "name": "bench"},
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    key_id = str(response.json()["data"]["id"])
    response = httpx.patch(
        f"{serve.url}/v2/call_control_applications/{account.connection_id}",
        json={"recording_encryption_key_id": key_id},
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    return key_id


def wav_bytes(seconds: float, *, rate: int = 8000, seed: int = 0) -> bytes:
    """Mono 16-bit PCM: a tone whose pitch depends on `seed`, so every file differs."""
    frames = int(seconds * rate)
    step = 2 * math.pi * (300 + seed % 500) / rate
    period = [struct.pack("<h", int(8000 * math.sin(step * i))) for i in range(rate)]
    samples = b"".join(period) * (frames // rate) + b"".join(period[: frames % rate])
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples)
    return out.getvalue()


def wav_header(data_bytes: int, *, rate: int = 8000) -> bytes:
    """The 44-byte header of a mono 16-bit PCM WAV with `data_bytes` of samples."""
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def load_average() -> float:
    return os.getloadavg()[0]


class Profiler:
    """`py-spy record` attached to a running process until stopped (a context manager).

    The format follows the file name: `.svg` a flame graph, `.json` speedscope, anything else
    py-spy's "raw" collapsed stacks (one `frame;frame;... count` line per stack, easy to sum).
    """

    def __init__(self, pid: int, output: Path, rate: int = 200, native: bool = False) -> None:
        self.pid = pid
        self.output = output
        self.rate = rate
        self.native = native  # C frames too (uvloop, sqlite, hashlib): slower sampling
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(self.output.suffix, "raw")
        spy = Path(sys.executable).parent / "py-spy"
        self._process = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(self.rate),
                "--format",
                fmt,
                "--output",
                str(self.output),
                "--threads",
                # only samples of the thread holding the GIL: where Python spends CPU, without
                # the threads that merely wait (py-spy's idle detection counts many of them)
                "--gil",
                # py-spy pauses the process for native stacks; else it reads without pausing
                *(["--native"] if self.native else ["--nonblocking"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # attached before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
