"""A webhook receiver as a customer writes one in a few lines: `http.server`, in its own process.

`BaseHTTPRequestHandler` answers HTTP/1.0 unless told otherwise (`keep_alive`: HTTP/1.1), with
Nagle's algorithm on, and writes the answer's head and its body in two sends (`end_headers`,
then `wfile.write`). On HTTP/1.0 it closes the connection after each answer; on HTTP/1.1 it
keeps it, and then the body waits for the client's ACK of the head. tests/receiver.py, the
suite's receiver, answers HTTP/1.1 too but runs in the bench's own process (a thread).
`bench/pipeline.py --receiver plain|plain-keepalive` uses this one: the shape of the issue's own
run (issue 24, the low-load figure).

The child prints `<monotonic time> <body>` per delivery (CLOCK_MONOTONIC is system-wide, so the
time compares with the bench's); `PlainReceiver` reads those lines into tests.receiver.Delivery
records. No signature is checked (the suite's receiver does).

    python bench/plain_receiver.py [--keep-alive]     # prints its URL, then one line a delivery
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from tests.receiver import Delivery  # noqa: E402


class PlainReceiver:
    """The receiver in a child process; a context manager with what `bench/pipeline.py` reads."""

    def __init__(self, host: str = "127.0.0.1", *, keep_alive: bool = False) -> None:
        self.host = host
        self.keep_alive = keep_alive
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._process: subprocess.Popen[str] | None = None
        self._url = ""

    def __enter__(self) -> PlainReceiver:
        command = [sys.executable, str(Path(__file__).resolve()), "--host", self.host]
        self._process = subprocess.Popen(
            command + (["--keep-alive"] if self.keep_alive else []),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        self._url = self._process.stdout.readline().strip()
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            at, _, body = line.rstrip("\n").partition(" ")
            delivery = Delivery("/webhooks", body, {}, float(at), 200)
            with self._lock:
                self._deliveries.append(delivery)

    def url(self, path: str = "/webhooks") -> str:
        return self._url

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)


def serve(host: str, keep_alive: bool) -> None:
    out_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            arrived = time.monotonic()
            with out_lock:
                print(f"{arrived} {body}", flush=True)
            answer = b'{"ok":true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    print(f"http://{host}:{server.server_address[1]}/webhooks", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--keep-alive", action="store_true", help="HTTP/1.1, kept alive")
    args = parser.parse_args()
    serve(args.host, args.keep_alive)
