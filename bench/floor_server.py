"""The floor of a recording's cost on callvault's stack: the same work a recording needs —
a multipart ingest over HTTP, the audio durable on disk, a committed row, a checksummed put
into the customer's bucket, two more committed row changes, an Ed25519-signed webhook — with
nothing else: no auth model, no validation, no leases, retries, metrics or logs.

Not a server to use: `bench/floor.py` runs it next to `callvault serve` to show what the
libraries callvault is built on (uvicorn + httptools + uvloop, python-multipart, SQLite,
obstore, httpx, cryptography) cost by themselves per recording, and what each of callvault's
mandated layers (FastAPI, SQLAlchemy) adds on top.

    python bench/floor_server.py --port P --data-dir D --bucket B --endpoint URL --region R \
        --access-key K --secret-key S --webhook-url URL [--http raw|fastapi]
        [--db sqlite3|sqlalchemy] [--blocking loop|thread] [--slots 8] [--batched]

`--batched` (issue 24): the row writes go through a group commit — the writes ready together
share one transaction and one commit (fsync), taken at once, no timer — as callvault's
batch_writer.py does; what is left is the floor of the work per recording, not per commit.

It speaks `POST /internal/v1/recordings` (multipart: `metadata` JSON + `audio`), answers 202
`{"data": {"id": ...}}` and sends `call.recording.saved` with the recording id, which is what
bench/pipeline.py's client and webhook counter need; `GET /health` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import obstore
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from obstore.store import S3Store
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY, connection_id TEXT, call_leg_id TEXT, metadata TEXT,
    status TEXT, object_key TEXT, created_at REAL, updated_at REAL
)
"""


class GroupCommit:
    """Writes that are ready together committed together: one writer takes everything waiting,
    `commit(ops)` commits it in one transaction, then each caller is answered."""

    def __init__(self, commit: Callable[[list[Any]], Awaitable[None]]) -> None:
        self.commit = commit
        self.waiting: list[tuple[Any, asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, op: Any) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((op, future))
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                await self.commit([op for op, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for _, future in batch:
                    future.set_result(None)


class Rows:
    """The three writes of a recording, each its own committed (fsynced) transaction (or,
    batched, in a transaction shared with the writes ready at the same moment)."""

    async def insert(self, recording_id: str, metadata: dict[str, Any]) -> None: ...
    async def stored(self, recording_id: str, key: str) -> None: ...
    async def delivered(self, recording_id: str) -> None: ...


class PlainSqlite(Rows):
    """sqlite3 without a statement layer (WAL, synchronous=FULL as callvault's), each commit
    on the event loop (no thread hop, but the loop waits for the fsync) or, `offload`, in a
    thread."""

    def __init__(self, path: Path, offload: bool, batched: bool = False) -> None:
        self.offload = offload
        self.group = GroupCommit(self._commit_many_async) if batched else None
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)
        self.lock = threading.Lock()  # one connection, used from the loop or worker threads

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.group is not None:
            await self.group.submit((sql, params))
            return
        if self.offload:
            await asyncio.to_thread(self._commit, sql, params)
        else:
            self._commit(sql, params)

    def _commit(self, sql: str, params: tuple[Any, ...]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, params)
            self.db.execute("COMMIT")

    async def _commit_many_async(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        if self.offload:
            await asyncio.to_thread(self._commit_many, ops)
        else:
            self._commit_many(ops)

    def _commit_many(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in ops:
                    self.db.execute(sql, params)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    async def insert(self, recording_id: str, metadata: dict[str, Any]) -> None:
        await self._write(
            "INSERT INTO recordings VALUES (?, ?, ?, ?, 'received', NULL, ?, ?)",
            (
                recording_id,
                metadata["connection_id"],
                metadata["call_leg_id"],
                json.dumps(metadata),
                time.time(),
                time.time(),
            ),
        )

    async def stored(self, recording_id: str, key: str) -> None:
        await self._write(
            "UPDATE recordings SET status='stored', object_key=?, updated_at=? WHERE id=?",
            (key, time.time(), recording_id),
        )

    async def delivered(self, recording_id: str) -> None:
        await self._write(
            "UPDATE recordings SET status='delivered', updated_at=? WHERE id=?",
            (time.time(), recording_id),
        )


class CoreSqlalchemy(Rows):
    """The same statements through SQLAlchemy 2 Core on callvault's own async engine
    (`db.make_engine`: its one-hop aiosqlite driver, pool and pragmas, BEGIN IMMEDIATE for
    writes), the cheapest use of the mandated database layer."""

    def __init__(self, path: Path, batched: bool = False) -> None:
        from sqlalchemy import Column, Float, MetaData, String, Table, insert, update

        from callvault.db import WRITES, make_engine

        metadata = MetaData()
        self.table = Table(
            "recordings",
            metadata,
            Column("id", String, primary_key=True),
            Column("connection_id", String),
            Column("call_leg_id", String),
            Column("metadata", String),
            Column("status", String),
            Column("object_key", String),
            Column("created_at", Float),
            Column("updated_at", Float),
        )
        self.engine = make_engine(f"sqlite:///{path}").execution_options(**{WRITES: True})
        self._insert = insert(self.table)
        self._update = update(self.table)
        self.metadata = metadata
        self.group = GroupCommit(self._commit_many) if batched else None

    async def _commit_many(self, ops: list[tuple[Any, dict[str, Any]]]) -> None:
        async with self.engine.begin() as connection:
            for statement, params in ops:
                await connection.execute(statement, params)

    async def _write(self, statement: Any, params: dict[str, Any]) -> None:
        if self.group is not None:
            await self.group.submit((statement, params))
            return
        async with self.engine.begin() as connection:
            await connection.execute(statement, params)

    async def create(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(self.metadata.create_all)
        await self.engine.dispose()  # its connections belong to this loop, not the server's

    async def insert(self, recording_id: str, metadata: dict[str, Any]) -> None:
        await self._write(
            self._insert,
            {
                "id": recording_id,
                "connection_id": metadata["connection_id"],
                "call_leg_id": metadata["call_leg_id"],
                "metadata": json.dumps(metadata),
                "status": "received",
                "created_at": time.time(),
                "updated_at": time.time(),
            },
        )

    async def stored(self, recording_id: str, key: str) -> None:
        await self._write(
            self._update.where(self.table.c.id == recording_id),
            {"status": "stored", "object_key": key, "updated_at": time.time()},
        )

    async def delivered(self, recording_id: str) -> None:
        await self._write(
            self._update.where(self.table.c.id == recording_id),
            {"status": "delivered", "updated_at": time.time()},
        )


class Floor:
    def __init__(self, args: argparse.Namespace, rows: Rows) -> None:
        self.incoming = Path(args.data_dir) / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.rows = rows
        self.offload = args.blocking == "thread"
        self.bucket = S3Store(
            args.bucket,
            config={
                "endpoint": args.endpoint,
                "region": args.region,
                "access_key_id": args.access_key,
                "secret_access_key": args.secret_key,
                "virtual_hosted_style_request": False,
                "checksum_algorithm": "sha256",  # as callvault: the store verifies the body
            },
            client_options={"allow_http": True},
        )
        self.webhook_url = args.webhook_url
        self.signing_key = Ed25519PrivateKey.generate()
        self.client = httpx.AsyncClient(timeout=10)
        self.slots = asyncio.Semaphore(args.slots)
        self.tasks: set[asyncio.Task[None]] = set()

    async def ingest(self, content_type: str, chunks: Callable[[], Awaitable[bytes | None]]) -> str:
        recording_id = str(uuid.uuid4())
        path = self.incoming / recording_id
        fields: dict[str, bytearray] = {}
        current: list[str] = []
        with path.open("wb") as audio:

            def on_part_begin() -> None:
                current.clear()

            def on_header_value(data: bytes, start: int, end: int) -> None:
                if not current:
                    _, options = parse_options_header(data[start:end])
                    if b"name" in options:
                        current.append(options[b"name"].decode())

            def on_part_data(data: bytes, start: int, end: int) -> None:
                name = current[0] if current else ""
                if name == "audio":
                    audio.write(data[start:end])
                else:
                    fields.setdefault(name, bytearray()).extend(data[start:end])

            _, options = parse_options_header(content_type)
            parser = MultipartParser(
                options[b"boundary"],
                {
                    "on_part_begin": on_part_begin,
                    "on_header_value": on_header_value,
                    "on_part_data": on_part_data,
                },
            )
            while (chunk := await chunks()) is not None:
                parser.write(chunk)
            parser.finalize()
            audio.flush()
            if self.offload:
                await asyncio.to_thread(os.fsync, audio.fileno())
            else:
                os.fsync(audio.fileno())
        metadata = json.loads(bytes(fields["metadata"]))
        await self.rows.insert(recording_id, metadata)
        task = asyncio.create_task(self.process(recording_id, path, metadata))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return recording_id

    async def process(self, recording_id: str, path: Path, metadata: dict[str, Any]) -> None:
        async with self.slots:
            key = f"floor/{metadata['call_leg_id']}.wav"
            await obstore.put_async(
                self.bucket, key, path, attributes={"Content-Type": "audio/wav"}
            )
            await self.rows.stored(recording_id, key)
            body = json.dumps(
                {
                    "data": {
                        "event_type": "call.recording.saved",
                        "id": str(uuid.uuid4()),
                        "payload": {"recording_id": recording_id, "object_key": key},
                    }
                }
            )
            timestamp = str(int(time.time()))
            signature = self.signing_key.sign(f"{timestamp}|{body}".encode())
            response = await self.client.post(
                self.webhook_url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
                    "telnyx-timestamp": timestamp,
                },
            )
            response.raise_for_status()
            await self.rows.delivered(recording_id)
            path.unlink()  # noqa: ASYNC240 - blocking on the loop is the floor's cheapest way


def raw_app(floor: Floor) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A bare ASGI callable: the cheapest way to take a request under uvicorn."""

    async def respond(send: Send, status: int, body: bytes) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] == "GET":
            await respond(send, 200, b'{"status":"ok"}')
            return
        headers = dict(scope["headers"])
        more = True

        async def chunks() -> bytes | None:
            nonlocal more
            if not more:
                return None
            message = await receive()
            more = message.get("more_body", False)
            return bytes(message.get("body", b""))

        recording_id = await floor.ingest(headers[b"content-type"].decode(), chunks)
        await respond(send, 202, json.dumps({"data": {"id": recording_id}}).encode())

    return app


def fastapi_app(floor: Floor) -> Any:
    """The same through a FastAPI route taking the request's stream."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/internal/v1/recordings", status_code=202)
    async def ingest(request: Request) -> JSONResponse:
        stream = request.stream().__aiter__()

        async def chunks() -> bytes | None:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return None

        recording_id = await floor.ingest(request.headers["content-type"], chunks)
        return JSONResponse({"data": {"id": recording_id}}, status_code=202)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("data-dir", "bucket", "endpoint", "region", "access-key", "secret-key"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--webhook-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http", choices=["raw", "fastapi"], default="raw")
    parser.add_argument("--db", choices=["sqlite3", "sqlalchemy"], default="sqlite3")
    parser.add_argument("--blocking", choices=["loop", "thread"], default="loop")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--batched", action="store_true", help="group commit (issue 24)")
    args = parser.parse_args()
    database = Path(args.data_dir) / "floor.sqlite3"
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    rows: Rows
    if args.db == "sqlite3":
        rows = PlainSqlite(database, offload=args.blocking == "thread", batched=args.batched)
    else:
        rows = CoreSqlalchemy(database, batched=args.batched)
        asyncio.run(rows.create())
    floor = Floor(args, rows)
    app = raw_app(floor) if args.http == "raw" else fastapi_app(floor)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
