"""Fixtures shared by the whole suite. Real servers are started in tests/servers.py; the
databases here are a real SQLite file and a real PostgreSQL (127.0.0.1:5432), which must be
there: a missing PostgreSQL fails the suite instead of skipping it.

Tests isolate themselves by creating their own accounts (every row belongs to one), so one
migrated database per session serves every test.
"""

from __future__ import annotations

import os

os.environ.setdefault("CALLVAULT_ALLOW_PRIVATE_NETWORKS", "true")

import asyncio
import base64
import dataclasses
import secrets
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn

from callvault.accounts.service import NewAccount, create_account
from callvault.app import create_app
from callvault.config import Settings, load_settings
from callvault.db import migrate, transaction
from callvault.runtime import Runtime
from tests.conformance import assert_conforms

pytest_plugins = ["tests.servers", "tests.receiver"]

POSTGRES_ADMIN_DSN = os.environ.get(
    "CALLVAULT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    name = f"callvault_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_DSN} is required for the suite: {exc}")
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    migrate(url)
    yield url
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'callvault.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def fresh_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], str]:
    """A migrated SQLite database of its own in a directory: for settings with keys of their
    own (make_settings), whose sealed rows would not open under the shared database's keys (and
    would fail /ready's keys check for every later test there). A copy of one migrated file."""
    template = tmp_path_factory.mktemp("sqlite-template") / "callvault.db"
    migrate(f"sqlite:///{template}")

    def make(directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, directory / "callvault.db")
        return f"sqlite:///{directory / 'callvault.db'}"

    return make


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on each database."""
    return str(request.getfixturevalue(f"{request.param}_url"))


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    env = {
        "CALLVAULT_DATA_DIR": str(data_dir),
        "CALLVAULT_DATABASE_URL": database_url,
        "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CALLVAULT_INGEST_TOKEN": "ingest-" + secrets.token_urlsafe(16),
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
    }
    return dataclasses.replace(load_settings(env), **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), database_url)


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(settings)
    yield runtime
    await runtime.close()


@pytest.fixture(scope="session")
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The API in-process (no worker, no lifespan): fast, for endpoint tests. Every answer of
    an operation in Telnyx's spec is checked against the spec's schema (tests/conformance.py):
    a drift fails the test that produced it."""
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://callvault.test",
        event_hooks={"response": [conforms_to_spec]},
    ) as client:
        yield client


async def conforms_to_spec(response: httpx.Response) -> None:
    """httpx response hook: the body against Telnyx's schema for its operation and status."""
    if not response.request.url.path.startswith("/v2/"):
        return
    await response.aread()
    assert_conforms(
        response.request.method, response.request.url.path, response.status_code, response.content
    )


@pytest.fixture
async def account(runtime: Runtime) -> NewAccount:
    async with transaction(runtime.sessions) as session:
        return await create_account(session, runtime.settings.keyring, "test account")


@pytest.fixture
async def other_account(runtime: Runtime) -> NewAccount:
    async with transaction(runtime.sessions) as session:
        return await create_account(session, runtime.settings.keyring, "another account")


def auth(account: NewAccount) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.api_key}"}


@dataclasses.dataclass
class LiveServer:
    """`callvault serve` in a thread of this process: a real HTTP server on a free port."""

    settings: Settings
    run_worker: bool = True
    port: int = dataclasses.field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.settings = dataclasses.replace(
            self.settings, public_url=f"http://127.0.0.1:{self.port}"
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        # the runtime is built inside the server's own event loop, which the lifespan runs in
        app = create_app(Runtime.build(self.settings), run_worker=self.run_worker)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("callvault did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real HTTP server with the worker running, on the session's database."""
    server = LiveServer(settings).start()
    yield server
    server.stop()
