"""`callvault demo`: the whole flow on a fresh temp data dir, in about a second.

1. a webhook receiver on a free loopback port (the customer's side),
2. `callvault serve` in this process on a free port: embedded SQLite, local default store,
   API + worker,
3. an account (its Ed25519 webhook public key is printed) and a Call Control application
   pointing at the receiver (API v2),
4. a generated WAV ingested over HTTP like a media server would,
5. the `call.recording.saved` webhook: its signature checked (Ed25519 over
   `"{telnyx-timestamp}|{body}"`, as the Telnyx SDKs do), printed,
6. the download link from the webhook fetched and its sha256 compared with the WAV's.

Exits 0 when every step worked, 1 with the failing step's reason otherwise (including a
timeout). Private networks are allowed for this run only: the receiver is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import math
import shutil
import socket
import struct
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from callvault.config import load_settings
from callvault.logs import configure_logging

TIMESTAMP_TOLERANCE_SECS = 300


class DemoError(Exception):
    """A step failed; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tone_wav(seconds: float = 1.0, rate: int = 8000, hertz: float = 440.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * hertz * i / rate)))
                for i in range(int(seconds * rate))
            )
        )
    return out.getvalue()


@dataclass
class Received:
    body: str
    headers: dict[str, str]


@dataclass
class Receiver:
    """The customer's webhook endpoint: records every POST and answers 200."""

    deliveries: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.deliveries.append(Received(body, headers))
                receiver.arrived.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def verify_signature(public_key_b64: str, delivery: Received, now: float) -> None:
    """What `telnyx.webhooks.unwrap` checks: the Ed25519 signature and a recent timestamp."""
    timestamp = delivery.headers.get("telnyx-timestamp")
    signature = delivery.headers.get("telnyx-signature-ed25519")
    if not timestamp or not signature:
        raise DemoError("the webhook has no telnyx-timestamp / telnyx-signature-ed25519 header")
    if abs(now - int(timestamp)) > TIMESTAMP_TOLERANCE_SECS:
        raise DemoError("the webhook's timestamp is more than 300 s off")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(base64.b64decode(signature), f"{timestamp}|{delivery.body}".encode())
    except InvalidSignature:
        raise DemoError("the webhook's signature does not verify") from None


class Server:
    """`callvault serve` (API + worker) in a thread of this process."""

    def __init__(self, environ: dict[str, str], port: int) -> None:
        from callvault.app import create_app
        from callvault.db import migrate
        from callvault.runtime import Runtime

        self.settings = load_settings(environ)
        migrate(self.settings.database_url)
        app = create_app(Runtime.build(self.settings), run_worker=True)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, within: float) -> None:
        self._thread.start()
        deadline = time.monotonic() + within
        while not self._server.started:
            if not self._thread.is_alive():
                raise DemoError("callvault serve did not start")
            if time.monotonic() > deadline:
                raise DemoError("callvault serve did not start before the timeout")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def say(text: str = "") -> None:
    print(text, flush=True)


async def _create_account(settings: Any) -> Any:
    from callvault.accounts.service import create_account
    from callvault.db import database_sessions, transaction

    async with (
        database_sessions(settings.database_url) as sessions,
        transaction(sessions) as session,
    ):
        return await create_account(session, settings.keyring, "demo")


def _create_application(http: httpx.Client, api_key: str, webhook_url: str) -> str:
    response = http.post(
        "/v2/call_control_applications",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "application_name": "callvault demo",
            "webhook_event_url": webhook_url,
            "webhook_api_version": "2",
        },
    )
    if response.status_code != 201:
        raise DemoError(f"creating the application answered {response.status_code}")
    connection_id: str = response.json()["data"]["id"]
    say(f"application        {connection_id} → webhooks to {webhook_url}")
    return connection_id


def _ingest(
    http: httpx.Client, ingest_token: str, connection_id: str, audio: bytes
) -> tuple[str, float]:
    """Posts the recording like a media server would; its id and when the 202 came back."""
    started = time.time() - 1.0
    metadata = {
        "connection_id": connection_id,
        "call_control_id": "v3:demo-call-control-id",
        "call_leg_id": "9977677e-85ae-11ec-826d-02420a0d7e70",
        "call_session_id": "99706bb8-85ae-11ec-885c-02420a0d7e70",
        "format": "wav",
        "channels": "single",
        "recording_started_at": _iso(started),
        "recording_ended_at": _iso(started + 1.0),
        "client_state": base64.b64encode(b"callvault demo").decode(),
    }
    sent_at = time.monotonic()
    response = http.post(
        "/internal/v1/recordings",
        headers={"Authorization": f"Bearer {ingest_token}"},
        files={
            "metadata": (None, json.dumps(metadata), "application/json"),
            "audio": ("demo.wav", audio, "audio/wav"),
        },
    )
    if response.status_code != 202:
        raise DemoError(f"ingest answered {response.status_code}: {response.text[:300]}")
    recording_id: str = response.json()["data"]["id"]
    answered_at = time.monotonic()
    took_ms = (answered_at - sent_at) * 1000
    say(f"ingested           {recording_id} ({len(audio)} bytes, 202 in {took_ms:.0f} ms)")
    return recording_id, answered_at


def _saved_webhook_link(
    receiver: Receiver, public_key: str, recording_id: str, answered_at: float, deadline: float
) -> str:
    """Waits for the `call.recording.saved` webhook, checks it; its download link."""
    if not receiver.arrived.wait(max(0.0, deadline - time.monotonic())):
        raise DemoError("no webhook arrived before the timeout")
    latency_ms = (time.monotonic() - answered_at) * 1000
    delivery = receiver.deliveries[0]
    verify_signature(public_key, delivery, time.time())
    body = json.loads(delivery.body)
    say(f"webhook            received {latency_ms:.0f} ms after the 202, signature verified")
    say(json.dumps(body, indent=2))
    data = body.get("data", {})
    if data.get("event_type") != "call.recording.saved":
        raise DemoError(f"expected call.recording.saved, got {data.get('event_type')}")
    if data.get("payload", {}).get("recording_id") != recording_id:
        raise DemoError("the webhook names another recording")
    link: str = data["payload"]["recording_urls"]["wav"]
    say(f"download link      {link}")
    return link


def _download_and_compare(http: httpx.Client, link: str, audio: bytes) -> None:
    download = http.get(link)
    if download.status_code != 200:
        raise DemoError(f"downloading the recording answered {download.status_code}")
    expected = hashlib.sha256(audio).hexdigest()
    got = hashlib.sha256(download.content).hexdigest()
    if got != expected:
        raise DemoError(f"downloaded sha256 {got} differs from the WAV's {expected}")
    say(f"downloaded         {len(download.content)} bytes, sha256 {got} matches")


def _flow(server: Server, receiver: Receiver, base_url: str, deadline: float) -> None:
    settings = server.settings
    account = asyncio.run(_create_account(settings))
    say(f"account            {account.account_id}")
    say(f"webhook public key {account.webhook_public_key}")
    with httpx.Client(base_url=base_url, timeout=10) as http:
        connection_id = _create_application(http, account.api_key, receiver.url)
        audio = tone_wav()
        recording_id, answered_at = _ingest(http, settings.ingest_token, connection_id, audio)
        link = _saved_webhook_link(
            receiver, account.webhook_public_key, recording_id, answered_at, deadline
        )
        _download_and_compare(http, link, audio)


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def run_demo(*, timeout: float = 30.0, keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 on success)."""
    configure_logging(logging.WARNING)
    data_dir = Path(tempfile.mkdtemp(prefix="callvault-demo-"))
    deadline = time.monotonic() + timeout
    port = free_port()
    receiver = Receiver()
    server: Server | None = None
    try:
        say(f"data dir           {data_dir}")
        environ = {
            "CALLVAULT_DATA_DIR": str(data_dir),
            "CALLVAULT_PUBLIC_URL": f"http://127.0.0.1:{port}",
            # the receiver is on 127.0.0.1; a real deployment keeps this off
            "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
        }
        receiver.start()
        server = Server(environ, port)
        server.start(within=deadline - time.monotonic())
        say(f"callvault          http://127.0.0.1:{port} (embedded SQLite, local default store)")
        _flow(server, receiver, f"http://127.0.0.1:{port}", deadline)
        say("demo ok")
        return 0
    except DemoError as exc:
        say(f"demo failed: {exc}")
        return 1
    except Exception as exc:  # any other failure: a clear line, not a traceback
        say(f"demo failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if server is not None:
            server.stop()
        receiver.stop()
        if keep:
            say(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
