"""Which errors mean "the database is away" (wait it out: 503, back off) and which are bugs."""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy import exc as sa_exc

from callvault.db import database_unavailable


def wrapped(orig: Exception, kind: type[sa_exc.DBAPIError] = sa_exc.OperationalError) -> Exception:
    return kind("SELECT 1", {}, orig)


def test_outages() -> None:
    assert database_unavailable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert database_unavailable(OSError("Multiple exceptions: [Errno 111] Connect call failed"))
    assert database_unavailable(TimeoutError())
    assert database_unavailable(sa_exc.TimeoutError("QueuePool limit"))
    assert database_unavailable(wrapped(sqlite3.OperationalError("unable to open database file")))
    assert database_unavailable(wrapped(sqlite3.OperationalError("disk I/O error")))


def test_not_outages() -> None:
    assert not database_unavailable(OSError(errno.ENOSPC, "No space left on device"))
    assert not database_unavailable(ValueError("bug"))
    assert not database_unavailable(wrapped(sqlite3.OperationalError("no such table: x")))
    assert not database_unavailable(
        wrapped(sqlite3.IntegrityError("UNIQUE"), sa_exc.IntegrityError)
    )
