"""Fixtures for the security tests.

`fresh_database_url`: a database of its own (SQLite file and PostgreSQL), for tests that act
on every row, such as key rotation, and so must not touch the rows of the rest of the suite.
`pytest_terminal_summary`: prints how many requests the schemathesis run sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from callvault.db import migrate
from tests.conftest import POSTGRES_ADMIN_DSN, _admin


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'own.db'}"
        migrate(url)
        yield url
        return
    name = f"callvault_sec_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# what the schemathesis run sent (test_fuzz_openapi.py), reported after the run
FUZZ_STATS: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sent = FUZZ_STATS.get("requests", 0)
    if not sent:
        return
    terminalreporter.write_sep("-", "schemathesis (tests/security/test_fuzz_openapi.py)")
    statuses = ", ".join(
        f"{key.removeprefix('status ')}: {count}"
        for key, count in sorted(FUZZ_STATS.items())
        if key.startswith("status ")
    )
    terminalreporter.write_line(
        f"generated requests sent: {sent} ({FUZZ_STATS.get('real ids', 0)} with ids of real "
        f"resources); responses by status: {statuses}"
    )
