"""Real callvault processes for the fault tests: the `callvault` console script in its own
process group (so a kill reaches everything it started), a fresh PostgreSQL database per test,
an ingest client that retries like a media server, and readers for the JSON logs the processes
write (the upload spans that show who uploaded what, when).

Every process started through `Processes` is killed when its `with` block ends, whatever
happened inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import obstore
import telnyx
from obstore.store import S3Store

from tests.conftest import POSTGRES_ADMIN_DSN
from tests.receiver import Delivery
from tests.servers import SeaweedFS, free_port

CALLVAULT = Path(sys.executable).with_name("callvault")
START_TIMEOUT = 30.0
# the log lines (worker/uploads.py) that open and close an upload span
UPLOAD_STARTED = "upload started"
UPLOAD_ENDED = {"recording stored", "upload will be retried", "recording kept in the default store"}


def clean_environment(**values: str) -> dict[str, str]:
    """This interpreter's environment without callvault's or AWS's settings, plus `values`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALLVAULT_", "AWS_", "STORAGE_EMULATOR_HOST"))
    }
    env["CALLVAULT_ALLOW_PRIVATE_NETWORKS"] = "true"
    env.update(values)
    return env


# --------------------------------------------------------------------------------------------
# PostgreSQL


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (not migrated), dropped afterwards."""
    name = f"callvault_fault_{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# processes


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """`callvault ARGS…` to completion; its stdout (fails with its stderr on a non-zero exit)."""
    done = subprocess.run(
        [str(CALLVAULT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"callvault {' '.join(args)} exited {done.returncode}:\n" + (done.stderr[-3000:])
    )
    return done.stdout


@dataclass
class Incarnation:
    """One run of a process: its log, and how it ended."""

    label: str
    log_path: Path
    process: subprocess.Popen[bytes]
    started_at: float
    ended_at: float | None = None
    ending: str | None = None  # "killed" / "stopped"

    def __post_init__(self) -> None:
        self._read_to = 0
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        """The structured (JSON) log lines so far (read incrementally: polled often)."""
        with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as log:
            log.seek(self._read_to)
            chunk = log.read()
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits
            self._read_to += complete
            for line in chunk[:complete].decode(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        self._events.append(json.loads(line))
        return self._events

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class CallvaultProcess:
    """A `callvault …` command that may be killed and started again (same args, same env)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    incarnations: list[Incarnation] = field(default_factory=list)

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    @property
    def running(self) -> bool:
        return bool(self.incarnations) and self.current.process.poll() is None

    def start(self) -> CallvaultProcess:
        assert not self.running, f"{self.name} runs already"
        label = f"{self.name}.{len(self.incarnations)}"
        log_path = self.log_dir / f"{label}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(CALLVAULT), *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches all of it
            )
        self.incarnations.append(Incarnation(label, log_path, process, time.time()))
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> CallvaultProcess:
        """The API answers /health, or the worker has logged that it started."""
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.current.process.poll() is not None:
                raise AssertionError(
                    f"{self.current.label} exited with {self.current.process.returncode}:\n"
                    f"{self.current.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.current.label} not ready:\n{self.current.log_tail()}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        if self.port is not None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    return int(response.status) == 200
            except (OSError, urllib.error.URLError):
                return False
        return any(e.get("event") == "worker started" for e in self.current.events())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> float:
        """SIGKILL to the whole group, no chance to clean up; returns when it happened."""
        incarnation = self.current
        with contextlib.suppress(ProcessLookupError):
            os.killpg(incarnation.process.pid, signal.SIGKILL)
        killed_at = time.time()
        incarnation.process.wait(timeout=10)
        incarnation.ended_at, incarnation.ending = killed_at, "killed"
        return killed_at

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful stop); SIGKILL if it is not gone within `timeout`. Exit code."""
        incarnation = self.current
        if incarnation.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(incarnation.process.pid, signal.SIGTERM)
            try:
                incarnation.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return -9
        if incarnation.ended_at is None:
            incarnation.ended_at, incarnation.ending = time.time(), "stopped"
        return int(incarnation.process.returncode)


class Processes:
    """Starts callvault processes and kills every one of them on exit, even after a failure."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.all: list[CallvaultProcess] = []

    def api(self, name: str, env: dict[str, str], *extra: str) -> CallvaultProcess:
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), *extra]
        env = {**env, "CALLVAULT_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        return self._add(CallvaultProcess(name, args, env, self.log_dir, port=port))

    def worker(self, name: str, env: dict[str, str]) -> CallvaultProcess:
        return self._add(CallvaultProcess(name, ["worker"], env, self.log_dir))

    def _add(self, process: CallvaultProcess) -> CallvaultProcess:
        self.all.append(process)
        return process

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.all:
            if process.running:
                process.kill()

    def logs(self) -> str:
        """Tails of every incarnation's log (for assertion messages)."""
        return "\n".join(
            f"--- {i.label} ({i.ending or 'running'})\n{i.log_tail(15)}"
            for p in self.all
            for i in p.incarnations
        )


# --------------------------------------------------------------------------------------------
# upload spans: who uploaded which recording when, from the worker logs


@dataclass(frozen=True)
class UploadSpan:
    recording_id: str
    process: str  # incarnation label
    start: float
    end: float
    outcome: str  # a log event of UPLOAD_ENDED, or "killed" / "stopped"


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def upload_spans(incarnations: Iterable[Incarnation]) -> list[UploadSpan]:
    """Every upload attempt as a time span; attempts a kill cut short end at the kill."""
    spans: list[UploadSpan] = []
    for incarnation in incarnations:
        open_: dict[str, float] = {}
        for event in incarnation.events():
            recording_id = event.get("recording_id")
            name = event.get("event")
            if not recording_id or "timestamp" not in event:
                continue
            at = _epoch(event["timestamp"])
            if name == UPLOAD_STARTED:
                open_[recording_id] = at
            elif name in UPLOAD_ENDED and recording_id in open_:
                spans.append(
                    UploadSpan(recording_id, incarnation.label, open_.pop(recording_id), at, name)
                )
        end = incarnation.ended_at if incarnation.ended_at is not None else time.time()
        ending = incarnation.ending or "open"
        for recording_id, start in open_.items():
            spans.append(UploadSpan(recording_id, incarnation.label, start, end, ending))
    return spans


def overlaps(spans: Iterable[UploadSpan]) -> list[tuple[UploadSpan, UploadSpan]]:
    """Pairs of spans of one recording, in different processes, that overlap in time."""
    by_recording: dict[str, list[UploadSpan]] = {}
    for span in spans:
        by_recording.setdefault(span.recording_id, []).append(span)
    found = []
    for group in by_recording.values():
        group.sort(key=lambda s: s.start)
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if second.process != first.process and second.start < first.end:
                    found.append((first, second))
    return found


def taken_over(spans: Iterable[UploadSpan]) -> set[str]:
    """Recordings whose upload a kill cut short and that another process then stored."""
    spans = list(spans)
    cut = {(s.recording_id, s.process) for s in spans if s.outcome == "killed"}
    return {
        s.recording_id
        for s in spans
        if s.outcome == "recording stored"
        and any(r == s.recording_id and p != s.process for r, p in cut)
    }


def open_uploads(incarnation: Incarnation) -> set[str]:
    """Recordings this process is uploading right now (per its log)."""
    open_: set[str] = set()
    for event in incarnation.events():
        if event.get("event") == UPLOAD_STARTED:
            open_.add(event["recording_id"])
        elif event.get("event") in UPLOAD_ENDED:
            open_.discard(event.get("recording_id", ""))
    return open_


async def kill_mid_upload(process: CallvaultProcess, within: float = 5.0) -> tuple[float, int]:
    """SIGKILL the process while its log shows an upload in progress (or after `within`
    seconds regardless); returns (kill time, uploads that were in progress)."""
    deadline = time.monotonic() + within
    while not (busy := open_uploads(process.current)) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a log file)
        await asyncio.sleep(0.005)
    killed_at = process.kill()
    return killed_at, len(busy)


# --------------------------------------------------------------------------------------------
# ingest like a media server: the same metadata again until the server has it


@dataclass
class Sent:
    metadata: dict[str, Any]
    audio: bytes
    recording_id: str = ""
    tries: int = 0


async def ingest_until_accepted(
    client: httpx.AsyncClient, url: str, token: str, sent: Sent, *, give_up_after: float = 90.0
) -> None:
    """POST until 202/200: connection errors and 5xx (the server was killed, or restarting)
    are retried with the very same metadata, as a media server would."""
    deadline = time.monotonic() + give_up_after
    while True:
        sent.tries += 1
        try:
            response = await client.post(
                f"{url}/internal/v1/recordings",
                files={
                    "metadata": (None, json.dumps(sent.metadata), "application/json"),
                    "audio": ("recording.wav", sent.audio, "audio/wav"),
                },
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code in (200, 202):
            sent.recording_id = str(response.json()["data"]["id"])
            return
        assert response is None or response.status_code >= 500, response.text
        assert time.monotonic() < deadline, f"ingest never accepted after {sent.tries} tries"
        await asyncio.sleep(0.2)


async def ingest_paced(
    url: str,
    token: str,
    batch: list[Sent],
    *,
    every: float,
    concurrency: int,
) -> None:
    """Send `batch` in bursts: `concurrency` recordings at once, a new burst every `every`
    seconds (a recording of a burst still being retried holds its slot)."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0)) as client:

        async def one(index: int, sent: Sent) -> None:
            burst = index // concurrency
            await asyncio.sleep(max(0.0, started + burst * every - time.monotonic()))
            async with gate:
                await ingest_until_accepted(client, url, token, sent)

        await asyncio.gather(*(one(i, s) for i, s in enumerate(batch)))


# --------------------------------------------------------------------------------------------
# buckets, read directly (not through callvault's code)


def bucket_store(server: SeaweedFS, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        config={
            "endpoint": server.endpoint,
            "region": server.region,
            "access_key_id": server.access_key,
            "secret_access_key": server.secret_key,
            "virtual_hosted_style_request": False,
        },
        client_options={"allow_http": True},
    )


async def list_bucket(server: SeaweedFS, bucket: str) -> dict[str, int]:
    """key → size of every object in the bucket."""
    metas = await obstore.list(bucket_store(server, bucket)).collect_async()
    return {str(m["path"]): int(m["size"]) for m in metas}


async def read_object(server: SeaweedFS, bucket: str, key: str) -> bytes:
    result = await obstore.get_async(bucket_store(server, bucket), key)
    return bytes(await result.bytes_async())


def files_under(*directories: Path) -> list[Path]:
    """Every file (not directory) below the directories."""
    return sorted(p for d in directories if d.exists() for p in d.rglob("*") if p.is_file())


_sdk = telnyx.Telnyx(api_key="KEY-not-used-for-verification")


def verify_signature(delivery: Delivery, public_key: str) -> Any:
    """The official SDK's unwrap, as a customer calls it: raises unless the signature holds."""
    return _sdk.webhooks.unwrap(delivery.body, headers=delivery.headers, key=public_key)


def assert_all_landed(
    objects: Mapping[str, bytes],
    sent_by_leg: Mapping[str, bytes],
    deliveries: Iterable[Delivery],
    public_key: str,
    recording_ids: Iterable[str],
) -> None:
    """Every accepted recording is in the bucket with the bytes sent (keys end in
    `{call_leg_id}-{seconds}`), exactly once, and each has a `call.recording.saved` webhook
    whose signature the official SDK verifies."""
    assert len(objects) == len(sent_by_leg)
    for key, data in objects.items():
        leg = key.rsplit("/", 1)[1].rsplit("-", 1)[0]
        assert hashlib.sha256(data).digest() == hashlib.sha256(sent_by_leg[leg]).digest(), key
    verified = set()
    for delivery in deliveries:
        if 200 <= delivery.answered < 300:
            verify_signature(delivery, public_key)
            assert delivery.event_type == "call.recording.saved"
            verified.add(delivery.payload["recording_id"])
    assert verified == set(recording_ids)
