"""/v2/docs (issue 21, item 2): off unless CALLVAULT_API_DOCS, and then Swagger UI from this
origin only, under the console's Content-Security-Policy; /v2/openapi.json always."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser

from callvault.app import create_app
from callvault.config import Settings
from callvault.runtime import Runtime
from tests.conftest import LiveServer, make_settings

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "api-docs.js")


def with_docs(settings: Settings) -> Settings:
    return dataclasses.replace(settings, environ={**settings.environ, "CALLVAULT_API_DOCS": "true"})


@pytest.fixture
async def docs_api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dataclasses.replace(runtime, settings=with_docs(runtime.settings)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://callvault.test") as client:
        yield client


async def test_the_docs_are_off_by_default_and_the_spec_is_always_served(
    api: httpx.AsyncClient,
) -> None:
    assert (await api.get("/v2/docs")).status_code == 404
    for name in ASSETS:
        assert (await api.get(f"/v2/docs/static/{name}")).status_code == 404
    spec = await api.get("/v2/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")


async def test_the_docs_page_loads_nothing_from_elsewhere(docs_api: httpx.AsyncClient) -> None:
    page = await docs_api.get("/v2/docs")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "default-src 'none'" in policy
    sources = [
        source
        for source in re.findall(r'(?:src|href)="([^"]+)"', page.text)
        if source != "data:,"  # the empty favicon: no request at all
    ]
    assert sources and all(source.startswith("/v2/docs/static/") for source in sources), sources
    assert "<script>" not in page.text  # no inline script
    for name in ASSETS:
        asset = await docs_api.get(f"/v2/docs/static/{name}")
        assert asset.status_code == 200 and len(asset.content) > 100, name
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert (await docs_api.get("/v2/docs/static/../../app.py")).status_code == 404
    assert (await docs_api.get("/v2/docs/static/redoc.standalone.js")).status_code == 404
    assert (await docs_api.get("/v2/openapi.json")).status_code == 200


@pytest.fixture
def docs_server(fresh_sqlite: Callable[[Path], str], tmp_path: Path) -> Iterator[LiveServer]:
    """The page is the same on either database: SQLite only (its own: keys of its own)."""
    settings = make_settings(tmp_path, fresh_sqlite(tmp_path / "db"))
    server = LiveServer(with_docs(settings), run_worker=False).start()
    yield server
    server.stop()


async def test_swagger_ui_renders_under_the_policy_in_a_browser(
    browser: Browser, docs_server: LiveServer
) -> None:
    context = await browser.new_context()
    requested: list[str] = []
    errors: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = await context.new_page()
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    await page.goto(f"{docs_server.url}/v2/docs")
    # an operation of the spec, rendered by Swagger UI from /v2/openapi.json
    await page.get_by_text("The public key that verifies your webhooks").first.wait_for(
        timeout=60_000
    )
    await context.close()
    origin = urlsplit(docs_server.url).netloc
    assert {urlsplit(url).netloc for url in requested if not url.startswith("data:")} == {origin}
    # a Content-Security-Policy refusal shows as a console error
    assert errors == [], errors
