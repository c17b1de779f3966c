"""A webhook receiver as a customer writes one in a few lines: `http.server` with its defaults.

`BaseHTTPRequestHandler` answers HTTP/1.0 unless told otherwise, so every webhook comes on a
new connection, which the receiver closes after its answer; it writes the answer's head and its
body in two sends (`end_headers`, then `wfile.write`). tests/receiver.py, the suite's receiver,
answers HTTP/1.1 and keeps connections open. `bench/pipeline.py --receiver plain` uses this one:
the shape of the issue's own run (issue 24, the low-load figure).

It records what `bench/pipeline.py` reads of a delivery (tests.receiver.Delivery) and checks no
signature (the suite's receiver does).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.receiver import Delivery


class PlainReceiver:
    """`ThreadingHTTPServer` + `BaseHTTPRequestHandler` on a free loopback port, in a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                receiver._record(
                    Delivery(
                        path=self.path,
                        body=body,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        received_at=time.monotonic(),
                        answered=200,
                    )
                )
                answer = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PlainReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "/webhooks") -> str:
        return f"http://{self.host}:{self._server.server_address[1]}{path}"

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)
