"""Where ingest reads its context (recordings/ingest.py `IngestPlan.context`): on SQLite on the
event loop itself, through the runtime's loop reader (db.LoopReader), not through a session of
the runtime's engine (a thread hop and the async adapter); on PostgreSQL through a session. A
loop read that fails is read through a session instead."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from callvault.accounts.service import NewAccount
from callvault.db import LoopReader
from callvault.recordings.ingest import _read_on_loop
from callvault.runtime import Runtime
from tests.recordings.conftest import metadata_for, post_recording
from tests.recordings.samples import make_wav

# the context read is the one statement of an ingest that reads the applications table
_CONTEXT_READ = "FROM applications"


@contextmanager
def context_reads() -> Iterator[dict[str, int]]:
    """Context reads seen while attached, by where they ran: "loop" (the loop reader's
    synchronous engine, `sqlite://`) or "session" (any other engine)."""
    seen = {"loop": 0, "session": 0}

    def executing(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _CONTEXT_READ in statement:
            seen["loop" if str(conn.engine.url) == "sqlite://" else "session"] += 1

    event.listen(Engine, "before_cursor_execute", executing)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", executing)


@pytest.mark.usefixtures("clean_incoming")
async def test_ingest_reads_its_context_on_the_loop_on_sqlite(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount, connection_id: str
) -> None:
    metadata = metadata_for(connection_id)
    with context_reads() as seen:
        first = await post_recording(api, runtime, metadata, make_wav(seconds=0.2))
        # a repeat: the loop read finds the recording the first ingest committed
        repeat = await post_recording(api, runtime, metadata, make_wav(seconds=0.2))
    assert first.status_code == 202, first.text
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["data"]["id"] == first.json()["data"]["id"]
    if runtime.engine.dialect.name == "sqlite":
        assert seen == {"loop": 2, "session": 0}
    else:
        assert runtime.loop_reader is None
        assert seen == {"loop": 0, "session": 2}


def test_a_failed_loop_read_is_left_to_a_session(tmp_path: Path) -> None:
    not_a_database = tmp_path / "callvault.db"
    not_a_database.write_bytes(b"this is not an SQLite database file" * 100)
    reader = LoopReader(str(not_a_database))
    key = ("connection", "leg", datetime(2024, 5, 17, tzinfo=UTC), "/2024/05/17/x.wav")
    with context_reads() as seen:
        assert _read_on_loop(reader, key) is None  # the caller reads through a session
    assert seen == {"loop": 1, "session": 0}
    # closed after the error: a database put in its place is what the next read reads (the
    # old connection would still read the file it had open)
    not_a_database.unlink()
    with closing(sqlite3.connect(not_a_database, isolation_level=None)) as database:
        database.execute("CREATE TABLE t (x INTEGER)")
        database.execute("INSERT INTO t VALUES (7)")
    assert reader.scalar("SELECT x FROM t") == 7
    reader.close()
    assert _read_on_loop(None, key) is None  # no loop reader (PostgreSQL)
