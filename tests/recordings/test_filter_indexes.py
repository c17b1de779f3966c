"""Every filter of GET /v2/recordings has an index (account_id, column) in the migrated
database, SQLite and PostgreSQL alike, and SQLite's planner uses it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text

from callvault.recordings.models import FILTERED
from callvault.runtime import Runtime


async def test_every_filtered_column_is_indexed(runtime: Runtime) -> None:
    def indexes(connection: Any) -> dict[str, list[str]]:
        return {
            index["name"]: list(index["column_names"])
            for index in inspect(connection).get_indexes("recordings")
        }

    async with runtime.engine.connect() as connection:
        found = await connection.run_sync(indexes)
        for column in FILTERED:
            assert found.get(f"ix_recordings_account_{column}") == ["account_id", column], column
        if runtime.engine.dialect.name == "sqlite":
            plan = await connection.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT id FROM recordings "
                    "WHERE account_id = 'a' AND sip_call_id = 'x'"
                )
            )
            assert "ix_recordings_account_sip_call_id" in " ".join(str(row) for row in plan)
    assert {"from_number", "to_number", "conference_id", "sip_call_id"} <= set(FILTERED)
