"""SQLAlchemy's aiosqlite adapter with one thread hop per statement instead of four.

aiosqlite runs every call on the connection's own thread, and SQLAlchemy's adapter makes four
such calls per statement (create a cursor, execute, fetch all rows, close the cursor), each a
round trip through a queue, a thread wake-up and `call_soon_threadsafe` back into the event
loop. Here one function does all four on the connection's thread and hands back the rows and
the cursor's attributes (description, rowcount, lastrowid). Measured on the dev box with
bench/db_roundtrip.py (CPU per operation, stock adapter -> this one): a SELECT 195 -> 122 us,
a read session with one `get` 440 -> 286 us, a write transaction 392 -> 260 us.

Besides, a ROLLBACK with no transaction open is skipped and a BEGIN travels with the
statement after it (OneHopConnection). Connections, transactions, errors and the pool are
aiosqlite's and SQLAlchemy's own. Used through `create_async_engine(..., module=dbapi())`
(db.make_engine), the documented way to give a dialect another DBAPI module. Server-side
cursors are not used by callvault and keep the stock implementation.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, list[Any], int, int | None, bool]


# the BEGINs db._sqlite_begin emits: held back and sent in the same hop as the statement that
# follows (a BEGIN takes no lock before that statement anyway, IMMEDIATE or not)
DEFERRED_BEGINS = frozenset({"BEGIN", "BEGIN IMMEDIATE"})


def _run_statement(
    connection: sqlite3.Connection,
    begin: str | None,
    operation: str,
    parameters: Any,
    many: bool,
) -> Outcome:
    """On the connection's thread: `begin` if given, then execute, fetch everything, close;
    return what the cursor knew (description, rows, rowcount, lastrowid) and whether a
    transaction is open."""
    cursor = connection.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, connection.in_transaction
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statements each cost one trip to the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount", "arraysize")

    def __init__(self, adapt_connection: Any) -> None:
        # no aiosqlite cursor is opened here (the stock adapter spends a thread hop on it)
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _async_soft_close(self) -> None:
        return None  # nothing stays open on the connection's thread

    def close(self) -> None:
        self._rows.clear()

    async def _run(self, operation: str, parameters: Any, many: bool) -> None:
        connection = cast(OneHopConnection, self._adapt_connection)
        async with connection._execute_mutex:
            connection._in_transaction = True  # unknown if the statement fails: assume open
            if not many and not parameters and operation in DEFERRED_BEGINS:
                connection._pending_begin = operation
                self._description, self._rowcount, self._lastrowid = None, -1, None
                self._rows = collections.deque()
                return
            begin, connection._pending_begin = connection._pending_begin, None
            outcome: Outcome = await self._connection._execute(
                _run_statement, self._connection._conn, begin, operation, parameters, many
            )
        self._description, rows, self._rowcount, self._lastrowid, in_transaction = outcome
        connection._in_transaction = in_transaction
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            await_(self._run(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            await_(self._run(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Also saves the hops that do nothing: a ROLLBACK when no transaction is open (the pool
    rolls back every connection it gets back, after the session has ended its transaction
    already), and the BEGIN, which goes with the next statement. A read session: 4 hops -> 2;
    a write transaction: 4 -> 2 plus one per further statement."""

    __slots__ = ("_in_transaction", "_pending_begin")
    _cursor_cls = OneHopCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # known from the last statement, commit or rollback; unknown (True) until then
        self._in_transaction = True
        self._pending_begin: str | None = None  # a BEGIN not sent yet

    def rollback(self) -> None:
        if self._pending_begin is not None:  # nothing was sent: nothing to undo
            self._pending_begin = None
            self._in_transaction = False
            return
        if not self._in_transaction:
            return
        super().rollback()
        self._in_transaction = False

    def commit(self) -> None:
        if self._pending_begin is not None:  # nothing was sent: nothing to commit
            self._pending_begin = None
            self._in_transaction = False
            return
        super().commit()
        self._in_transaction = False


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        stock = super().connect(*arg, **kw)
        return OneHopConnection(self, stock._connection)


def dbapi() -> OneHopDBAPI:
    """The DBAPI module to hand to `create_async_engine(module=...)` for sqlite+aiosqlite."""
    return OneHopDBAPI(aiosqlite, sqlite3)
