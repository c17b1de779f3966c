"""`/health` is liveness only; `/ready` says whether the database and the default store answer."""

from __future__ import annotations

from pathlib import Path

import httpx

from callvault.app import create_app
from callvault.runtime import Runtime
from tests.conftest import make_settings
from tests.servers import closed_port


async def test_ready_when_both_answer(api: httpx.AsyncClient) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "default_store": "ok"},
    }


async def test_not_ready_without_the_database_but_still_alive(tmp_path: Path) -> None:
    away = f"postgresql://postgres@127.0.0.1:{closed_port()}/callvault"
    runtime = Runtime.build(make_settings(tmp_path, away))
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://cv.test") as client:
            response = await client.get("/ready")
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.json()["checks"] == {
                "database": "unavailable",
                "default_store": "ok",
            }
            assert (await client.get("/health")).status_code == 200
            # any API call that needs the database: 503 + Retry-After in Telnyx's format
            listed = await client.get("/v2/recordings", headers={"Authorization": "Bearer KEY-x"})
            assert listed.status_code == 503, listed.text
            assert listed.json()["errors"][0]["title"] == "Service unavailable"
            assert listed.headers["retry-after"] == "5"
    finally:
        await runtime.close()
