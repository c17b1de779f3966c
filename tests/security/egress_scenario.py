"""The storage-redirect attack of issue 21, played inside a private network namespace.

Run by tests/security/test_egress_guard.py as `unshare --net --mount … python -m
tests.security.egress_scenario WORKDIR`: in the namespace only loopback exists, `/etc/hosts`,
`/etc/resolv.conf` and `/etc/nsswitch.conf` are bind-mounted from WORKDIR, and a public-looking
address (PUBLIC) is added to `lo`, so "public" and "internal" are both on this machine and nothing
leaves it.

- `evil.test`, `acct.evil.test`, `gcs.evil.test` resolve to PUBLIC, where a hostile "storage"
  server answers every request with a 307 to an internal target;
- `sub.evil.test` resolves to 127.0.0.1 (a subdomain of the endpoint's host);
- `rebind.test` is answered by a DNS server of this script: PUBLIC, then 127.0.0.1, in turn;
- the internal service listens on 127.0.0.1:80 and 127.0.0.1:9100 and records every request.

Every store operation (put, head, get, delete, the validate probe) of s3-generic, Azure and GCS
stores opened with private networks refused must leave the internal service untouched. Prints one
JSON object: {"cases": [{"case", "operation", "outcome"}], "internal_hits": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PUBLIC = "11.22.33.44"
INTERNAL_PORT = 9100
OPERATION_TIMEOUT_SECS = 8.0
HOSTS = f"""127.0.0.1 localhost
{PUBLIC} evil.test acct.evil.test gcs.evil.test
127.0.0.1 sub.evil.test
"""

internal_hits: list[str] = []


class Internal(BaseHTTPRequestHandler):
    """What must never be reached: answers 200 with a secret-looking body."""

    def _any(self) -> None:
        internal_hits.append(f"{self.command} {self.server.server_address[1]} {self.path}")
        body = b'{"AccessKeyId": "internal-secret"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

    def log_message(self, *args: Any) -> None:
        pass


class Hostile(BaseHTTPRequestHandler):
    """The customer's "storage": every request is redirected (307 keeps method and body)."""

    target = f"http://sub.evil.test:{INTERNAL_PORT}/latest/meta-data/iam/security-credentials/r"

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(307)
        self.send_header("Location", Hostile.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

    def log_message(self, *args: Any) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler], address: str, port: int) -> None:
    server = ThreadingHTTPServer((address, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def rebinding_dns() -> None:
    """A DNS server for rebind.test: A answers alternate PUBLIC, 127.0.0.1; nothing else."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    answers = 0

    def run() -> None:
        nonlocal answers
        while True:
            query, client = sock.recvfrom(512)
            ident = query[:2]
            end = 12
            while query[end] != 0:
                end += query[end] + 1
            question = query[12 : end + 5]
            qtype = struct.unpack("!H", query[end + 1 : end + 3])[0]
            name = query[12:end].lower()
            known = b"\x06rebind\x04test" == name
            header = ident + struct.pack("!HHHHH", 0x8180 if known else 0x8183, 1, 0, 0, 0)
            if known and qtype == 1:
                address = PUBLIC if answers % 2 == 0 else "127.0.0.1"
                answers += 1
                header = ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0)
                record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4)
                record += socket.inet_aton(address)
                sock.sendto(header + question + record, client)
            else:
                sock.sendto(header + question, client)

    threading.Thread(target=run, daemon=True).start()


def stores() -> dict[str, Any]:
    from callvault.storage import open_custom_store
    from tests.servers import make_service_account

    s3 = {
        "bucket": "recordings",
        "region": "us-east-1",
        "aws_access_key_id": "AKIAHOSTILE",
        "aws_secret_access_key": "hostile-secret-0123456789",
    }
    azure = {"bucket": "recordings", "account_name": "acct", "account_key": "a2V5" * 11}
    gcs = {"bucket": "recordings", "credentials": make_service_account().json}
    return {
        "s3-generic subdomain": open_custom_store(
            "s3-generic", {**s3, "endpoint": "http://evil.test"}, timeout_secs=5
        ),
        "s3-generic rebinding": open_custom_store(
            "s3-generic", {**s3, "endpoint": "http://rebind.test"}, timeout_secs=5
        ),
        "azure subdomain": open_custom_store("azure", azure, timeout_secs=5),
        "gcs subdomain": open_custom_store("gcs", gcs, timeout_secs=5),
    }


async def outcome(operation: Callable[[], Awaitable[Any]]) -> str:
    try:
        async with asyncio.timeout(OPERATION_TIMEOUT_SECS):
            result = await operation()
    except TimeoutError:
        return "timed out"
    except Exception as exc:
        return f"error: {getattr(exc, 'reason', type(exc).__name__)}"
    return f"ok: {str(result)[:80]}"


async def play(workdir: Path) -> dict[str, Any]:
    from callvault.storage.probe import probe_store

    sample = workdir / "sample.wav"
    sample.write_bytes(b"RIFF....WAVEfmt ")
    cases: list[dict[str, str]] = []

    async def read(store: Any) -> bytes:
        return b"".join([chunk async for chunk in store.get_stream("k")])

    for target in (
        f"http://sub.evil.test:{INTERNAL_PORT}/latest/meta-data/",
        f"http://127.0.0.1:{INTERNAL_PORT}/latest/meta-data/",
    ):
        Hostile.target = target
        for name, store in stores().items():
            operations: dict[str, Callable[[], Awaitable[Any]]] = {
                "put": lambda s=store: s.put_file(
                    "k", sample, content_type="audio/wav", metadata={}
                ),
                "head": lambda s=store: s.head("k"),
                "get": lambda s=store: read(s),
                "delete": lambda s=store: s.delete("k"),
                "probe": lambda s=store: probe_store(s, timeout_secs=5),
            }
            for operation, run in operations.items():
                result = await outcome(run)
                print(name, operation, result, internal_hits[-1:], file=sys.stderr, flush=True)
                cases.append(
                    {"case": f"{name} -> {target}", "operation": operation, "outcome": result}
                )
    return {"cases": cases, "internal_hits": internal_hits}


def main() -> None:
    workdir = Path(sys.argv[1])
    from callvault.storage.settings import StorageSettings
    from callvault.storage.settings import configure as configure_storage

    # as `callvault serve` configures storage from CALLVAULT_AZURE_BLOB_ENDPOINT
    configure_storage(StorageSettings(azure_blob_endpoint="http://{account_name}.evil.test"))
    os.environ["STORAGE_EMULATOR_HOST"] = "http://gcs.evil.test"
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS", "HTTP_PROXY", "HTTPS_PROXY"):
        os.environ.pop(name, None)
    serve(Internal, "127.0.0.1", 80)
    serve(Internal, "127.0.0.1", INTERNAL_PORT)
    serve(Hostile, PUBLIC, 80)
    rebinding_dns()
    print(json.dumps(asyncio.run(play(workdir))))


if __name__ == "__main__":
    main()
