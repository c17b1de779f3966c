"""The files one recording crosses from ingest to webhook, as the code runs (issue 23).

One recording is ingested over HTTP into an in-process `callvault serve` (API + worker, SQLite,
local default store) whose application stores in a customer bucket (SeaweedFS) or in the
default store; a profiler records every call into a callvault source file, in every thread,
from the ingest request until the webhook is received and the recording's staging copy is
gone. It prints the route as the sequence of files entered (a file entered again right after
itself counts once), the distinct files and folders, and the returns: entries into a file
that the route had already left.

    .venv/bin/python bench/route.py [--storage custom|default] [--route]

The worker's idle polling runs in the same process: its calls are part of the trace only if
they happen while the recording is on its way (the poll is slowed to 60 s to keep them out).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_settings
from tests.receiver import WebhookReceiver
from tests.recordings.samples import make_wav
from tests.servers import SeaweedFS
from tests.worker.flow import create_application, ingest, store_in_new_bucket

from callvault.accounts.service import create_account
from callvault.app import create_app
from callvault.db import migrate, transaction
from callvault.runtime import Runtime

PACKAGE = str(Path(__file__).resolve().parents[1] / "src" / "callvault") + "/"


class Route:
    """Files entered, in order, collapsed where a file calls into itself."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        # calls from one folder's code into another's: (caller folder, callee folder) -> count
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        path = frame.f_code.co_filename
        if not path.startswith(PACKAGE):
            return
        name = path[len(PACKAGE) :]
        caller = _nearest_package_file(frame.f_back)
        with self._lock:
            if not self.entered or self.entered[-1] != name:
                self.entered.append(name)
            if caller is not None and _folder(caller) != _folder(name):
                self.calls[(_folder(caller), _folder(name))] += 1

    @contextmanager
    def tracing(self) -> Iterator[None]:
        threading.setprofile(self.profile)
        sys.setprofile(self.profile)
        try:
            yield
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]

    def report(self, show_route: bool) -> str:
        seen: set[str] = set()
        returns: list[str] = []
        for name in self.entered:
            if name in seen:
                returns.append(name)
            seen.add(name)
        folders = {name.split("/")[0] for name in seen if "/" in name}
        # the same, a folder at a time (top-level plumbing files left out): the domains the
        # recording goes back and forth between
        hops: list[str] = []
        for name in self.entered:
            if "/" in name and (not hops or hops[-1] != name.split("/")[0]):
                hops.append(name.split("/")[0])
        folder_returns = sum(1 for i, hop in enumerate(hops) if hop in hops[:i])
        lines = [
            f"files crossed: {len(seen)} in {len(folders)} folders ({', '.join(sorted(folders))})",
            f"file entries: {len(self.entered)}, returns to a file already left: {len(returns)}",
            f"files returned to: {sorted(set(returns))}",
            f"folder hops: {len(hops)}, returns to a folder already left: {folder_returns}",
            "folders in order: " + " > ".join(hops),
            "calls between folders (caller > callee: count; top-level files as themselves): "
            + ", ".join(f"{a} > {b}: {n}" for (a, b), n in sorted(self.calls.items())),
        ]
        if show_route:
            lines.append("route: " + " > ".join(self.entered))
        return "\n".join(lines)


def _folder(name: str) -> str:
    return name.split("/")[0]


def _nearest_package_file(frame: FrameType | None) -> str | None:
    """The callvault file of the nearest caller frame (library frames in between skipped)."""
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(PACKAGE):
            return path[len(PACKAGE) :]
        frame = frame.f_back
    return None


async def run(data_dir: Path, url: str, storage: str, show_route: bool) -> str:
    settings = make_settings(data_dir, url)
    runtime = Runtime.build(settings)
    async with transaction(runtime.sessions) as session:
        account = await create_account(session, settings.keyring, "route")
    app = create_app(runtime, run_worker=True)
    route = Route()
    with WebhookReceiver() as receiver, SeaweedFS(data_dir / "seaweedfs") as seaweed:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as api,
        ):
            connection = await create_application(api, account.api_key, receiver.url())
            if storage == "custom":
                await store_in_new_bucket(api, account.api_key, connection, seaweed)
            # a first recording warms every lazy path (imports, caches, connections)
            await ingest(api, settings.ingest_token, connection, make_wav(seconds=0.5))
            await receiver.wait_for(1, within=30)
            with route.tracing():
                await ingest(api, settings.ingest_token, connection, make_wav(seconds=0.5))
                await receiver.wait_for(2, within=30)
                await _staging_gone(runtime)
    return route.report(show_route)


async def _staging_gone(runtime: Runtime) -> None:
    """Custom storage: the route ends once the staging copy's key is cleared."""
    from sqlalchemy import text

    for _ in range(500):
        async with runtime.sessions() as session:
            left = await session.scalar(
                text(
                    "SELECT count(*) FROM recordings "
                    "WHERE backend IS NOT NULL AND default_store_key IS NOT NULL"
                )
            )
        if not left:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("the staging copy was not removed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=["custom", "default"], default="custom")
    parser.add_argument("--route", action="store_true", help="print the whole route")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="callvault-route-"))
    url = f"sqlite:///{data_dir / 'callvault.db'}"
    migrate(url)
    print(asyncio.run(run(data_dir, url, args.storage, args.route)))


if __name__ == "__main__":
    main()
