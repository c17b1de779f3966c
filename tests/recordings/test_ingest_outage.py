"""Ingest when the database goes away between the durable put and the row: 503 + Retry-After in
the Telnyx format (never 202 without a row, never 500) and the object it wrote is removed."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import exc as sa_exc

from callvault.recordings import ingest as ingest_module
from callvault.recordings import repository
from callvault.runtime import Runtime
from tests.recordings.conftest import metadata_for, post_recording
from tests.recordings.samples import make_wav


async def test_database_gone_at_the_insert(
    api: httpx.AsyncClient,
    runtime: Runtime,
    connection_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written: list[str] = []
    # the local default store takes the received file by a rename (move_file, issue 14)
    real_put = runtime.default_store.move_file

    async def recording_put(key: str, *args: object, **kwargs: object) -> None:
        written.append(key)
        await real_put(key, *args, **kwargs)

    def connection_lost(*args: object) -> None:
        raise sa_exc.OperationalError("INSERT", {}, ConnectionResetError(104, "reset"))

    monkeypatch.setattr(runtime.default_store, "move_file", recording_put)
    monkeypatch.setattr(repository, "insert_new", connection_lost)
    metadata = metadata_for(connection_id)
    response = await post_recording(api, runtime, metadata, make_wav(0.2))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["errors"][0]["title"] == "Service unavailable"
    assert written and await runtime.default_store.head(written[0]) is None  # removed
    incoming = runtime.settings.data_dir / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
    # the database is back: the media server's retry is accepted
    monkeypatch.undo()
    again = await post_recording(api, runtime, metadata, make_wav(0.2))
    assert again.status_code == 202, again.text


def test_storage_full_reasons() -> None:
    assert ingest_module.storage_full("local bucket x: No space left on device")
    assert ingest_module.storage_full("s3 bucket b: HTTP 507 Insufficient Storage")
    assert not ingest_module.storage_full("s3 bucket b: connection refused")
