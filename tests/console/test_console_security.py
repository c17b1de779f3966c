"""The console's sign-in and request rules over plain HTTP (no browser): sessions shared by
processes, Secure cookies over https, expiry, CSRF on the login form, headers on every answer."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.config import Settings
from callvault.console.models import ConsoleSession
from callvault.console.sessions import COOKIE_NAME, SECURE_COOKIE_NAME
from callvault.db import transaction, utcnow
from callvault.runtime import Runtime
from tests.conftest import LiveServer
from tests.security.test_input_validation import HOSTILE_SEGMENTS, routes_with_path_params

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client: httpx.Client, api_key: str) -> httpx.Response:
    page = client.get("/console/login")
    token = CSRF.search(page.text)
    assert token is not None
    return client.post("/console/login", data={"api_key": api_key, "csrf_token": token[1]})


@pytest.fixture
def two_front_ends(settings: Settings) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two `serve --no-worker` processes on one database, as behind a load balancer."""
    first = LiveServer(settings, run_worker=False).start()
    second = LiveServer(settings, run_worker=False).start()
    yield first, second
    first.stop()
    second.stop()


def test_a_session_started_on_one_process_works_on_another(
    two_front_ends: tuple[LiveServer, LiveServer], account: NewAccount
) -> None:
    first, second = two_front_ends
    with httpx.Client(base_url=first.url, timeout=30) as client:
        answer = sign_in(client, account.api_key)
        assert answer.status_code == 303 and answer.headers["location"] == "/console"
        token = client.cookies[COOKIE_NAME]
    with httpx.Client(base_url=second.url, timeout=30, cookies={COOKIE_NAME: token}) as other:
        page = other.get("/console/recordings")
        assert page.status_code == 200
        assert "test account" in page.text
        csrf = CSRF.search(page.text)
        assert csrf is not None
        # signing out on the second process ends it everywhere
        assert other.post("/console/logout", data={"csrf_token": csrf[1]}).status_code == 303
    with httpx.Client(base_url=first.url, timeout=30, cookies={COOKIE_NAME: token}) as again:
        after = again.get("/console/recordings")
        assert after.status_code == 303 and after.headers["location"] == "/console/login"


async def test_cookies_are_secure_over_https_and_last_12_hours(
    runtime: Runtime, account: NewAccount
) -> None:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as client:
        login = await client.get("/console/login")
        token = CSRF.search(login.text)
        assert token is not None
        assert "secure" in login.headers["set-cookie"].lower()
        answer = await client.post(
            "/console/login", data={"api_key": account.api_key, "csrf_token": token[1]}
        )
    cookie = next(
        value
        for value in answer.headers.get_list("set-cookie")
        if value.startswith(SECURE_COOKIE_NAME + "=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "max-age", "path"} <= attributes
    assert "Max-Age=43200" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/;" in cookie or cookie.endswith("Path=/")  # __Host-: the whole origin


async def test_an_expired_session_signs_nobody_in(
    runtime: Runtime, account: NewAccount, api: httpx.AsyncClient
) -> None:
    login = await api.get("/console/login")
    token = CSRF.search(login.text)
    assert token is not None
    answer = await api.post(
        "/console/login", data={"api_key": account.api_key, "csrf_token": token[1]}
    )
    assert answer.status_code == 303
    assert (await api.get("/console")).status_code == 200
    async with transaction(runtime.sessions) as session:
        await session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.account_id == account.account_id)
            .values(expires_at=utcnow())
        )
    expired = await api.get("/console")
    assert expired.status_code == 303 and expired.headers["location"] == "/console/login"
    api.cookies.clear()


async def test_the_login_form_needs_its_csrf_token(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    await api.get("/console/login")  # sets the login cookie
    answer = await api.post("/console/login", data={"api_key": account.api_key})
    assert answer.status_code == 403
    assert COOKIE_NAME not in answer.headers.get("set-cookie", "")
    forged = await api.post(
        "/console/login", data={"api_key": account.api_key, "csrf_token": "x" * 32}
    )
    assert forged.status_code == 403
    api.cookies.clear()


@pytest.mark.parametrize(
    "path",
    ["/console/login", "/console", "/console/recordings/nope", "/console/static/console.css"],
)
async def test_every_answer_carries_the_security_headers(api: httpx.AsyncClient, path: str) -> None:
    answer = await api.get(path)
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_unknown_static_files_are_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/console/static/../console.py")).status_code == 404
    assert (await api.get("/console/static/endpoints.py")).status_code == 404


async def test_a_link_cannot_make_the_console_say_anything(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    login = await api.get("/console/login")
    token = CSRF.search(login.text)
    assert token is not None
    await api.post("/console/login", data={"api_key": account.api_key, "csrf_token": token[1]})
    try:
        page = await api.get("/console/applications?flash=Send+us+your+API+key")
        assert page.status_code == 200
        assert "Send us your API key" not in page.text
        known = await api.get("/console/applications?flash=application-deleted")
        assert "Application deleted." in known.text
    finally:
        api.cookies.clear()


async def test_every_console_path_parameter_refuses_traversal_and_junk(
    api: httpx.AsyncClient, runtime: Runtime, account: NewAccount
) -> None:
    """The API's hostile-segment walk, over the console's routes, signed in, with a valid CSRF
    token on every form: an error page (or the API's error body), never a 500."""
    app = create_app(runtime)
    routes = [
        (method, path, names)
        for method, path, names in routes_with_path_params(app)
        if path.startswith("/console")
    ]
    assert len(routes) >= 12
    login = await api.get("/console/login")
    token = CSRF.search(login.text)
    assert token is not None
    await api.post("/console/login", data={"api_key": account.api_key, "csrf_token": token[1]})
    page = await api.get("/console/applications")
    csrf = CSRF.search(page.text)
    assert csrf is not None
    failures = []
    pages_404 = 0
    try:
        for method, path, names in routes:
            for segment in HOSTILE_SEGMENTS:
                url = path
                for name in names:
                    url = url.replace("{" + name + "}", segment)
                data = {"csrf_token": csrf[1]} if method == "POST" else None
                request = api.build_request(method, "http://callvault.test/console/", data=data)
                request.url = request.url.copy_with(raw_path=url.encode())
                response = await api.send(request)
                if response.status_code not in {400, 403, 404, 405, 422} or (
                    "Traceback" in response.text
                ):
                    failures.append(f"{method} {url[:80]}: {response.status_code}")
                if response.status_code == 404 and "text/html" in response.headers.get(
                    "content-type", ""
                ):
                    pages_404 += 1  # signed in: the console's own 404 page, not a redirect
    finally:
        api.cookies.clear()
    assert failures == []
    assert pages_404 > len(routes)


async def test_a_refused_storage_save_never_echoes_a_secret(
    api: httpx.AsyncClient, account: NewAccount
) -> None:
    from tests.worker.flow import create_application

    connection_id = await create_application(api, account.api_key, "https://example.com/hooks")
    stored_secret = "wJalrXUtnFEMI/K7MDENG/" + "s" * 24
    answer = await api.post(
        f"/v2/custom_storage_credentials/{connection_id}",
        json={
            "backend": "s3",
            "configuration": {
                "bucket": "recordings-kept",
                "region": "us-east-1",
                "aws_access_key_id": "AKIAEXAMPLEKEPT",
                "aws_secret_access_key": stored_secret,
            },
        },
        headers={"Authorization": f"Bearer {account.api_key}"},
    )
    assert answer.status_code == 200, answer.text
    login = await api.get("/console/login")
    token = CSRF.search(login.text)
    assert token is not None
    signed = await api.post(
        "/console/login", data={"api_key": account.api_key, "csrf_token": token[1]}
    )
    assert signed.status_code == 303
    page = await api.get(f"/console/applications/{connection_id}")
    csrf = CSRF.search(page.text)
    assert csrf is not None
    # every secret input is a password input
    for name in ("s3.aws_secret_access_key", "azure.account_key", "azure.sas_token"):
        tag = re.search(rf'<input [^>]*name="{re.escape(name)}"[^>]*>', page.text)
        assert tag is not None and 'type="password"' in tag[0], name

    typed = {
        "s3": ("aws_secret_access_key", "typed-s3-secret-" + "x" * 20),
        "s3-generic": ("aws_secret_access_key", "typed-generic-secret-" + "y" * 20),
        "azure": ("account_key", "dHlwZWQtYXp1cmUta2V5" * 3),
    }
    for backend, (field, secret) in typed.items():
        refused = await api.post(
            f"/console/applications/{connection_id}/storage",
            data={
                "csrf_token": csrf[1],
                "backend": backend,
                f"{backend}.bucket": "Not_A_Bucket",
                f"{backend}.{field}": secret,
                f"{backend}.region": "us-east-1",
            },
        )
        assert refused.status_code == 422, refused.text
        assert secret not in refused.text, backend
        assert "Not_A_Bucket" in refused.text  # what is not secret comes back for correction
    # the stored secret stands in, masked as GET shows it
    assert stored_secret[-4:] in refused.text and stored_secret not in refused.text
    api.cookies.clear()
