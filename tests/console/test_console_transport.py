"""The console behind a TLS-ending proxy (issue 21, item 1): cookies are Secure and `__Host-`
whenever the public URL is https, HSTS goes with every console answer then, and `serve
--forwarded-allow-ips` (or CALLVAULT_FORWARDED_ALLOW_IPS) decides whose X-Forwarded-Proto is
believed."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from callvault.accounts.service import NewAccount
from callvault.app import create_app
from callvault.console.sessions import COOKIE_NAME, SECURE_COOKIE_NAME, SECURE_LOGIN_CSRF_COOKIE
from callvault.runtime import Runtime
from tests.conftest import free_port

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def cookie_named(response: httpx.Response, name: str) -> str:
    found = [value for value in response.headers.get_list("set-cookie") if value.startswith(name)]
    assert found, response.headers.get_list("set-cookie")
    return found[0]


def attributes(cookie: str) -> dict[str, str]:
    parts = [part.strip() for part in cookie.split(";")[1:]]
    return {part.split("=")[0].lower(): part.partition("=")[2] for part in parts}


@pytest.fixture
async def behind_proxy(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app with an https public URL, reached over plain http: what it sees behind a
    proxy that ends TLS and whose X-Forwarded-Proto it does not trust."""
    settings = dataclasses.replace(runtime.settings, public_url="https://vault.example.com")
    app = create_app(dataclasses.replace(runtime, settings=settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://backend:8000") as client:
        yield client


async def test_https_public_url_makes_host_only_secure_cookies_and_hsts(
    behind_proxy: httpx.AsyncClient, account: NewAccount
) -> None:
    login = await behind_proxy.get("/console/login")
    assert login.headers["strict-transport-security"] == "max-age=31536000"
    login_cookie = cookie_named(login, SECURE_LOGIN_CSRF_COOKIE)
    token = CSRF.search(login.text)
    assert token is not None
    value = login_cookie.split(";")[0].split("=", 1)[1]
    answer = await behind_proxy.post(
        "/console/login",
        data={"api_key": account.api_key, "csrf_token": token[1]},
        headers={"Cookie": f"{SECURE_LOGIN_CSRF_COOKIE}={value}"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    for cookie in (login_cookie, cookie_named(answer, SECURE_COOKIE_NAME + "=")):
        found = attributes(cookie)
        # what a browser demands of a __Host- cookie: Secure, Path=/, no Domain
        assert "secure" in found and found["path"] == "/" and "domain" not in found
        assert "httponly" in found and found["samesite"].lower() == "strict"
    session = cookie_named(answer, SECURE_COOKIE_NAME + "=").split(";")[0]
    page = await behind_proxy.get("/console", headers={"Cookie": session})
    assert page.status_code == 200 and "test account" in page.text
    # the plain name means nothing here: only the __Host- cookie signs in
    plain = session.replace(SECURE_COOKIE_NAME, COOKIE_NAME, 1)
    assert (await behind_proxy.get("/console", headers={"Cookie": plain})).status_code == 303


async def test_plain_http_keeps_console_scoped_cookies_without_hsts(
    api: httpx.AsyncClient,
) -> None:
    login = await api.get("/console/login")
    assert "strict-transport-security" not in login.headers
    cookie = login.headers["set-cookie"]
    assert not cookie.startswith("__Host-") and "secure" not in cookie.lower()
    assert "Path=/console/login" in cookie
    api.cookies.clear()


# ---- serve --forwarded-allow-ips


@dataclasses.dataclass
class Served:
    process: subprocess.Popen[str]
    url: str


@pytest.fixture(params=["flag", "environment"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """`callvault serve` trusting X-Forwarded-* from 127.0.0.2 only: by the flag (which
    overrides the environment variable, set here to another address), or by the variable."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLVAULT_")}
    env["CALLVAULT_DATA_DIR"] = str(tmp_path)
    command = [sys.executable, "-m", "callvault", "serve", "--port", str(port), "--no-worker"]
    if request.param == "flag":
        env["CALLVAULT_FORWARDED_ALLOW_IPS"] = "127.0.0.3"
        command += ["--forwarded-allow-ips", "127.0.0.2"]
    else:
        env["CALLVAULT_FORWARDED_ALLOW_IPS"] = "127.0.0.2"
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "callvault serve did not start"
            time.sleep(0.1)
        yield Served(process, url)
    finally:
        process.terminate()
        process.wait(timeout=30)


def login_cookie_from(served: Served, source: str) -> str:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=served.url, timeout=10) as client:
        answer = client.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    assert answer.status_code == 200
    return answer.headers["set-cookie"]


def test_forwarded_proto_is_believed_only_from_the_allowed_proxy(served: Served) -> None:
    trusted = login_cookie_from(served, "127.0.0.2")
    assert trusted.startswith(SECURE_LOGIN_CSRF_COOKIE) and "secure" in trusted.lower()
    # 127.0.0.1 (uvicorn's default) is replaced, and so is the environment's address by the flag
    for other in ("127.0.0.1", "127.0.0.3"):
        untrusted = login_cookie_from(served, other)
        assert not untrusted.startswith("__Host-") and "secure" not in untrusted.lower()
