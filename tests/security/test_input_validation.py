"""Hostile input: path parameters, file names, oversized bodies and unexpected failures all
answer in the Telnyx error format, never with a stack trace or a 5xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from callvault.app import create_app
from callvault.recordings.models import Recording
from callvault.storage.local import LocalStore
from tests.conftest import auth
from tests.recordings.samples import make_wav
from tests.security.flows import create_application, metadata, post_ingest

HOSTILE_SEGMENTS = [
    "%2E%2E",  # ".." once decoded
    "..%2F..",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%5C..%5Cwindows",  # backslashes
    "%252E%252E%252F",  # double encoded
    "%C0%AE%C0%AE",  # overlong UTF-8 for ".."
    "%00",
    "abc%00def",
    "%0D%0ASet-Cookie:%20x",
    "%E2%80%AE%F0%9F%98%80",  # right-to-left override, emoji
    "x" * 5000,
    "1' OR '1'='1",
    "%FF%FE",  # not UTF-8 at all
]


def routes_with_path_params(app) -> list[tuple[str, str, list[str]]]:
    found = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.path_format:
            continue
        names = [p.alias or p.name for p in context.dependant.path_params]
        if names:
            found += [(m, context.path_format, names) for m in sorted(context.methods or ())]
    return found


def assert_error(response: httpx.Response, allowed: set[int], where: str) -> None:
    assert response.status_code in allowed, f"{where}: {response.status_code} {response.text[:300]}"
    assert "Traceback" not in response.text, where
    if response.request.method != "HEAD":
        errors = response.json()["errors"]
        assert errors and all({"code", "title"} <= set(e) for e in errors), where


async def test_every_path_parameter_refuses_traversal_and_junk(api, runtime, account):
    app = create_app(runtime)
    # the console's HTML pages: tests/console/test_console_security.py walks them
    routes = [r for r in routes_with_path_params(app) if not r[1].startswith("/console")]
    assert len(routes) >= 14
    failures = []
    for method, path, names in routes:
        for segment in HOSTILE_SEGMENTS:
            url = path
            for name in names:
                url = url.replace("{" + name + "}", segment)
            request = api.build_request(method, "http://callvault.test/", headers=auth(account))
            request.url = request.url.copy_with(raw_path=url.encode())
            if method in ("POST", "PUT", "PATCH"):
                request = api.build_request(
                    method, "http://callvault.test/", headers=auth(account), json={}
                )
                request.url = request.url.copy_with(raw_path=url.encode())
            response = await api.send(request)
            try:
                # 403: a download link without a valid signature; 405: a decoded "/" that made
                # the path match another route's template
                assert_error(response, {400, 403, 404, 405, 422}, f"{method} {url[:80]}")
            except AssertionError as exc:
                failures.append(str(exc))
    assert failures == []


@pytest.mark.parametrize(
    "name",
    [
        "../escape",
        "a/b",
        "a\\b",
        "x" * 41,
        "",
        "name with space",
        "caf\u00e9",
        "%2e%2e",
        "semi;colon",
        "new\nline",
        "..",
        ".",
    ],
)
async def test_ingest_refuses_custom_file_names_outside_the_allowed_set(
    api, runtime, account, name
):
    connection_id = await create_application(api, account)
    response = await post_ingest(
        api, runtime.settings.ingest_token, metadata(connection_id, custom_file_name=name)
    )
    assert_error(response, {422}, repr(name))
    assert "custom_file_name" in response.text


@pytest.mark.parametrize("name", ["x" * 40, "Call-2024_05.17", "a..b"])
async def test_allowed_custom_file_names_stay_inside_the_accounts_folder(
    api, runtime, account, name
):
    connection_id = await create_application(api, account)
    response = await post_ingest(
        api, runtime.settings.ingest_token, metadata(connection_id, custom_file_name=name)
    )
    assert response.status_code == 202, response.text
    async with runtime.sessions() as session:
        key = await session.scalar(
            select(Recording.default_store_key).where(Recording.id == response.json()["data"]["id"])
        )
    assert key is not None and key.startswith(f"{account.account_id}/")
    assert key.rsplit("/", 1)[-1].startswith(f"{name}-")  # the timestamp suffix follows
    store = runtime.default_store
    assert isinstance(store, LocalStore)
    stored = store.path_for(key).resolve()
    assert stored.is_relative_to((Path(store.root) / account.account_id).resolve())


async def test_a_json_body_over_the_limit_is_refused_with_a_telnyx_413(api, account):
    body = {"application_name": "x" * (1024 * 1024 + 10), "webhook_event_url": "https://e.com"}
    response = await api.post("/v2/call_control_applications", json=body, headers=auth(account))
    assert_error(response, {413}, "oversized JSON")
    assert response.json()["errors"][0]["code"] == "190002"


async def test_a_chunked_json_body_over_the_limit_is_refused(api, account):
    async def chunks():
        yield b'{"application_name": "'
        for _ in range(200):
            yield b"x" * 8192
        yield b'", "webhook_event_url": "https://e.com"}'

    response = await api.post(
        "/v2/call_control_applications",
        content=chunks(),
        headers={**auth(account), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, {413}, "chunked JSON")


async def test_the_ingest_endpoint_takes_recordings_larger_than_the_json_limit(
    api, runtime, account
):
    connection_id = await create_application(api, account)
    audio = make_wav(seconds=80)  # 8 kHz, 16 bit: ~1.3 MB
    assert len(audio) > runtime.settings.max_json_bytes
    response = await post_ingest(
        api, runtime.settings.ingest_token, metadata(connection_id), audio=audio
    )
    assert response.status_code == 202, response.text


async def test_an_unexpected_failure_answers_500_without_a_trace(runtime):
    app = create_app(runtime)

    @app.get("/v2/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("database password is hunter2 at /srv/callvault/secret.py line 42")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/v2/test-only/boom")
    assert response.status_code == 500
    assert response.json() == {
        "errors": [
            {
                "code": "10007",
                "title": "Unexpected error",
                "detail": "An unexpected error occurred.",
            }
        ]
    }
    for leak in ("Traceback", "hunter2", "RuntimeError", "secret.py"):
        assert leak not in response.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/v2/nothing-here", {}, 404),
        ("PUT", "/v2/call_control_applications", {"json": {}}, 405),
        ("POST", "/v2/call_control_applications", {"content": b"{not json"}, 400),
        ("POST", "/v2/call_control_applications", {"json": []}, 422),
        ("POST", "/v2/call_control_applications", {"json": {"application_name": None}}, 422),
        ("GET", "/v2/recordings", {"params": {"page[size]": "-1"}}, 422),
        ("GET", "/v2/recordings", {"params": {"filter[created_at][gte]": "yesterday"}}, 422),
    ],
)
async def test_malformed_requests_answer_in_the_telnyx_format(
    api, account, method, path, kwargs, status
):
    headers = {**auth(account), "Content-Type": "application/json"}
    response = await api.request(method, path, headers=headers, **kwargs)
    assert_error(response, {status}, f"{method} {path}")


async def test_nul_characters_answer_422_on_every_database(api, account):
    """PostgreSQL cannot store U+0000: without the check these were 500s on PostgreSQL only."""
    connection_id = await create_application(api, account)
    requests = [
        ("GET", "/v2/recordings", {"params": {"filter[connection_id]": "a\x00b"}}),
        ("GET", "/v2/call_control_applications", {"params": {"filter[application_name]": "\x00"}}),
        (
            "POST",
            "/v2/call_control_applications",
            {"json": {"application_name": "a\x00b", "webhook_event_url": "https://e.com/x"}},
        ),
        (
            "PATCH",
            f"/v2/call_control_applications/{connection_id}",
            {"json": {"application_name": "\x00"}},
        ),
        ("POST", "/v2/recordings/00000000-0000-0000-0000-000000000000%00/actions/redeliver", {}),
    ]
    for method, path, kwargs in requests:
        response = await api.request(method, path, headers=auth(account), **kwargs)
        assert_error(response, {422}, f"{method} {path} {kwargs}")
        assert "NUL" in response.text


@pytest.mark.parametrize("path", ["/v2/recordings", "/v2/call_control_applications"])
async def test_a_page_far_past_the_end_is_empty_not_a_database_overflow(api, account, path):
    """Found by the fuzzer: page[number] 10**24 overflowed the 64-bit OFFSET (a 500)."""
    for number in (10**9, 2**63, 10**24):
        response = await api.get(
            path, params={"page[number]": number, "page[size]": 250}, headers=auth(account)
        )
        assert response.status_code == 200, (number, response.text)
        assert response.json()["data"] == []
