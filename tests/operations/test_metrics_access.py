"""`GET /metrics`: a bearer token when `CALLVAULT_METRICS_TOKEN` is set (issue 21), and the
backlog's queries run once per cache window however many scrapes ask (counted statements)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from callvault.app import create_app
from callvault.runtime import Runtime
from tests.credentials.helpers import counting

TOKEN = "scrape-" + "t0ken" * 6


def fresh_app(runtime: Runtime) -> httpx.AsyncClient:
    """An app of its own: its backlog cache starts empty."""
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://callvault.test")


def setenv(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setitem(runtime.settings.environ, name, value)  # type: ignore[arg-type]


async def test_open_without_a_token_and_bearer_only_with_one(
    api: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await api.get("/metrics")).status_code == 200
    setenv(runtime, monkeypatch, "CALLVAULT_METRICS_TOKEN", TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        response = await api.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["errors"][0]["code"] == "10009"
        assert TOKEN not in response.text
    response = await api.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "callvault_recordings" in response.text


async def test_scrapes_within_the_window_run_their_reads_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    setenv(runtime, monkeypatch, "CALLVAULT_METRICS_CACHE_SECS", "0")
    async with fresh_app(runtime) as client:
        with counting(runtime) as cold:
            assert (await client.get("/metrics")).status_code == 200
        # /ready's own caches (a passing keys check is kept 30 s) are warm from then on
        with counting(runtime) as warm:
            assert (await client.get("/metrics")).status_code == 200
    per_cold_read, per_read = len(cold.statements), len(warm.statements)
    assert per_read >= 1  # the backlog is read from the database

    setenv(runtime, monkeypatch, "CALLVAULT_METRICS_CACHE_SECS", "300")
    async with fresh_app(runtime) as client:
        with counting(runtime) as many:
            # a burst on a cold cache: one reads, the others wait for its answer
            answers = await asyncio.gather(*(client.get("/metrics") for _ in range(8)))
            answers += [await client.get("/metrics") for _ in range(8)]
        assert all(a.status_code == 200 for a in answers)
        assert len(many.statements) == per_cold_read  # 16 scrapes, one read

        # a window of 0 (as good as expired) reads again, once per scrape
        setenv(runtime, monkeypatch, "CALLVAULT_METRICS_CACHE_SECS", "0")
        with counting(runtime) as again:
            for _ in range(3):
                assert (await client.get("/metrics")).status_code == 200
        assert len(again.statements) == 3 * per_read
