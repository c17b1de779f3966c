"""A real HTTP(S) receiver on loopback for outbound-request tests: records what arrives.

Deliberately tiny (one request per connection, `Connection: close`) so a test sees exactly which
requests reached the socket, including ones the client should never have sent.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    sni: str | None


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass
class Receiver:
    replies: dict[str, Reply] = field(default_factory=dict)  # by path; default 200 "ok"
    received: list[Received] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    _server: asyncio.Server | None = None
    _sni: dict[int, str | None] = field(default_factory=dict)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> Receiver:
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._remember_sni
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _remember_sni(self, sslobj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        self._sni[id(sslobj)] = name

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            sslobj = writer.get_extra_info("ssl_object")
            sni = self._sni.get(id(sslobj)) if sslobj is not None else None
            self.received.append(Received(method, path, headers, body, sni))
            reply = self.replies.get(path, Reply())
            out = [f"HTTP/1.1 {reply.status} X", f"Content-Length: {len(reply.body)}"]
            out += [f"{k}: {v}" for k, v in reply.headers.items()]
            out += ["Connection: close", "", ""]
            writer.write("\r\n".join(out).encode() + reply.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
