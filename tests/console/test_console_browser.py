"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium; `make
setup` installs it, Playwright never downloads one) against `callvault serve` (a LiveServer
with its worker), SeaweedFS as the customer's bucket and the suite's webhook receiver.

The journey test screenshots every page: into a temp folder on every run, and into docs/console/
(which docs/console.md shows) when CALLVAULT_CONSOLE_SCREENSHOTS names that folder, so a test
run does not rewrite tracked files:
`CALLVAULT_CONSOLE_SCREENSHOTS=docs/console .venv/bin/pytest tests/console`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Browser, BrowserContext, Page, Request, Response
from sqlalchemy import select

from callvault.accounts.service import NewAccount
from callvault.console.models import ConsoleSession
from callvault.runtime import Runtime
from tests.conftest import LiveServer
from tests.receiver import WebhookReceiver
from tests.recordings.conftest import add_application, metadata_for, post_recording
from tests.recordings.samples import make_wav
from tests.servers import SeaweedFS

SCREENSHOTS = Path(
    os.environ.get("CALLVAULT_CONSOLE_SCREENSHOTS")
    or Path(tempfile.gettempdir()) / "callvault-console-screenshots"
).resolve()
WAIT_MS = 60_000  # generous: the machine is shared


class Traffic:
    """Every request the browser makes, and the headers of every page it loads."""

    def __init__(self, context: BrowserContext) -> None:
        self.requests: list[str] = []
        self.documents: list[Response] = []
        self.console_errors: list[str] = []
        context.on("request", self._request)
        context.on("response", self._response)

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _response(self, response: Response) -> None:
        if response.request.resource_type == "document":
            self.documents.append(response)

    def watch(self, page: Page) -> None:
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
    .map(e => e.name || e.id)"""


async def shot(page: Page, name: str) -> None:
    """Screenshot the page (SCREENSHOTS), after checking every input has a label."""
    assert await page.evaluate(UNLABELLED) == [], f"inputs without a label on {page.url}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def ingest(server: LiveServer, runtime: Runtime, connection_id: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        response = await post_recording(
            client, runtime, metadata_for(connection_id), make_wav(seconds=1.5)
        )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["id"])


async def reload_until(page: Page, text: str, *, within: float = 60) -> None:
    """Reload the page until it shows `text` (the worker runs in the background)."""
    deadline = time.monotonic() + within
    while text not in await page.content():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not show on {page.url} within {within} s")
        await page.wait_for_timeout(250)
        await page.reload()


# resolves once the audio player has its metadata (readyState >= 1: duration known)
_PLAYER_METADATA = """() => new Promise((resolve) => {
    const player = document.getElementById('player');
    if (player.readyState >= 1) { resolve(true); return; }
    player.addEventListener('loadedmetadata', () => resolve(true), { once: true });
})"""


async def player_has_metadata(page: Page) -> None:
    """Wait for the player's `loadedmetadata`. Not with `wait_for_function`: when its first
    check is false, Playwright polls by evaluating the predicate's text inside the page, which
    the console's CSP (script-src 'self', no 'unsafe-eval') refuses."""
    await asyncio.wait_for(page.evaluate(_PLAYER_METADATA), timeout=WAIT_MS / 1000)


async def sign_in(page: Page, server: LiveServer, api_key: str) -> Response | None:
    await page.goto(f"{server.url}/console/login")
    await page.get_by_label("API key").fill(api_key)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Sign in").click()
    return await navigation.value


async def test_console_journey(
    browser: Browser,
    live_server: LiveServer,
    runtime: Runtime,
    account: NewAccount,
    other_account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
) -> None:
    bucket = f"console-{uuid.uuid4().hex[:10]}"
    seaweedfs.create_bucket(bucket)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    traffic = Traffic(context)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    traffic.watch(page)
    base = live_server.url

    # not signed in: every page sends to the login form
    await page.goto(f"{base}/console/recordings")
    assert page.url == f"{base}/console/login"
    await shot(page, "login")

    # a wrong key is refused (typed and sent with the keyboard only: the field has the focus)
    async with page.expect_navigation() as navigation:
        await page.keyboard.type("KEY_not-a-valid-key")
        await page.keyboard.press("Enter")
    refused = await navigation.value
    assert refused is not None and refused.status == 401
    assert page.url == f"{base}/console/login"
    assert "That API key is not valid." in await page.content()
    assert await context.cookies() == [] or all(
        cookie["name"] != "callvault_console" for cookie in await context.cookies()
    )
    await shot(page, "login-refused")

    # the right key starts a 12 h session: HttpOnly, SameSite=Strict cookie, hashed in the db
    signed_in = await sign_in(page, live_server, account.api_key)
    assert signed_in is not None and signed_in.status == 200
    assert page.url == f"{base}/console"
    (cookie,) = [c for c in await context.cookies() if c["name"] == "callvault_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; test_console_security covers https
    twelve_hours = time.time() + 12 * 3600
    assert twelve_hours - 120 < cookie["expires"] < twelve_hours + 120
    async with runtime.sessions() as session:
        stored = list(
            await session.scalars(
                select(ConsoleSession.token_hash).where(
                    ConsoleSession.account_id == account.account_id
                )
            )
        )
    assert stored == [hashlib.sha256(cookie["value"].encode()).hexdigest()]
    assert cookie["value"] not in stored

    # create an application
    await page.get_by_role("link", name="Applications", exact=True).click()
    await page.get_by_label("Name").fill("Console journey")
    await page.get_by_label("Webhook URL", exact=True).fill(webhook_receiver.url())
    await page.get_by_label("Webhook API version").select_option("2")
    await page.get_by_label("Webhook timeout, seconds").fill("5")
    await shot(page, "applications")
    await page.get_by_role("button", name="Create application").click()
    await page.wait_for_url(re.compile(r"/console/applications/\d+"))
    connection_id = page.url.split("/console/applications/")[1].split("?")[0]
    assert "Application created." in await page.content()

    # the API's own validation message, shown next to the form
    await page.get_by_label("Backend").select_option("s3-generic")
    await page.locator("#storage-s3-generic-bucket").fill("Not_A_Bucket")
    await page.locator("#storage-s3-generic-region").fill(seaweedfs.region)
    await page.locator("#storage-s3-generic-endpoint").fill(seaweedfs.endpoint)
    await page.locator("#storage-s3-generic-aws-access-key-id").fill(seaweedfs.access_key)
    await page.locator("#storage-s3-generic-aws-secret-access-key").fill(seaweedfs.secret_key)
    await page.get_by_role("button", name="Save storage").click()
    await page.get_by_role("alert").filter(has_text="bucket name may contain only").wait_for()

    # s3-generic storage on SeaweedFS; the secret comes back masked as the API masks it
    await page.locator("#storage-s3-generic-bucket").fill(bucket)
    await page.locator("#storage-s3-generic-aws-secret-access-key").fill(seaweedfs.secret_key)
    await page.get_by_role("button", name="Save storage").click()
    await page.get_by_text("Storage saved.").wait_for()
    masked = await page.locator("#storage-s3-generic-aws-secret-access-key").input_value()
    assert masked == "*" * (len(seaweedfs.secret_key) - 4) + seaweedfs.secret_key[-4:]
    assert seaweedfs.secret_key not in await page.content()

    # Validate runs the live probe: ok
    await page.get_by_role("button", name="Validate").click()
    result = page.locator("#validation-result")
    await result.wait_for()
    assert (await result.inner_text()).startswith("Validation: ok")

    # saving again with the mask left as is keeps the secret (the probe still passes)
    await page.get_by_role("button", name="Save storage").click()
    await page.get_by_text("Storage saved.").wait_for()
    await page.get_by_role("button", name="Validate").click()
    await page.locator("#validation-result").wait_for()
    assert (await page.locator("#validation-result").inner_text()).startswith("Validation: ok")
    await shot(page, "application")

    # a recording is ingested, stored in the bucket; its webhook arrives
    recording_id = await ingest(live_server, runtime, connection_id)
    (saved,) = await webhook_receiver.wait_for(1, within=60)
    assert saved.event_type == "call.recording.saved"
    await page.get_by_role("link", name="Recordings", exact=True).click()
    await reload_until(page, ">stored<")
    row = page.locator("table.recordings tbody tr").first
    row_text = await row.inner_text()
    assert "stored" in row_text
    key_cell = await row.locator("td").nth(2).inner_text()
    assert key_cell.startswith(f"s3-generic: {bucket}/{account.account_id}/")
    await shot(page, "recordings")

    # its page: placement, and an audio player fed through the console (200, audio/wav)
    async with page.expect_response(
        lambda r: r.url.endswith(f"/console/recordings/{recording_id}/audio")
    ) as audio_info:
        await row.get_by_role("link").first.click()
    audio = await audio_info.value
    assert audio.status == 200
    assert audio.headers["content-type"] == "audio/wav"
    await player_has_metadata(page)
    duration = await page.evaluate("document.getElementById('player').duration")
    assert 1.4 < duration < 1.6
    object_key = await page.locator("#object-key").inner_text()
    assert object_key.startswith(f"{account.account_id}/")
    assert "call.recording.saved" in await page.content()
    await shot(page, "recording")

    # its webhook delivery shows, delivered, with the attempt's status code
    await page.get_by_role("link", name="Webhook deliveries", exact=True).click()
    delivered_row = page.locator(f"tr[data-event-id='{saved.event_id}']")
    assert "delivered" in await delivered_row.inner_text()
    assert "200" in await delivered_row.inner_text()

    # a delivery the receiver refuses (400: not retried) fails; Retry sends it again
    webhook_receiver.answer(400, times=1)
    second_id = await ingest(live_server, runtime, connection_id)
    refused_deliveries = await webhook_receiver.wait_for(2, within=60)
    failed_event = refused_deliveries[1].event_id
    failed_row = page.locator(f"tr[data-event-id='{failed_event}']")
    await reload_until(page, f'action="/console/deliveries/{failed_event}/retry"')
    assert "failed" in await failed_row.inner_text()
    assert "400" in await failed_row.inner_text()
    await shot(page, "deliveries")
    await failed_row.get_by_role("link").click()
    await page.wait_for_url(re.compile(rf"/console/deliveries/{failed_event}"))
    assert "Payload as sent" in await page.content()
    shown = json.loads(await page.locator("pre.payload").inner_text())
    assert shown == refused_deliveries[1].json()["data"]  # the event the receiver got
    assert shown["payload"]["recording_id"] == second_id
    await page.get_by_role("button", name="Retry").click()
    await page.get_by_text("Delivery queued again.").wait_for()
    retried = await webhook_receiver.wait_for(
        1, within=60, where=lambda d: d.event_id == failed_event and d is not refused_deliveries[1]
    )
    assert retried[-1].event_id == failed_event
    await reload_until(page, ">delivered<")
    timeline = await page.locator("ol.timeline").inner_text()
    assert "400" in timeline and "200" in timeline
    await shot(page, "delivery")

    # the overview counts them
    await page.get_by_role("link", name="Overview", exact=True).click()
    assert await page.locator("svg rect.bar-stored").count() >= 1
    await shot(page, "overview")

    # another account's recording answers 404 in the console
    other_connection = await add_application(runtime, other_account.account_id)
    other_recording = await ingest(live_server, runtime, other_connection)
    for path in (
        f"/console/recordings/{other_recording}",
        f"/console/recordings/{other_recording}/audio",
        f"/console/applications/{other_connection}",
    ):
        response = await page.goto(f"{base}{path}")
        assert response is not None and response.status == 404, path
    await page.goto(f"{base}/console/recordings/{other_recording}")
    await shot(page, "not-found")

    # a form posted without its CSRF token is refused (and changes nothing)
    forged = await page.request.post(
        f"{base}/console/applications",
        form={
            "application_name": "forged",
            "webhook_event_url": webhook_receiver.url(),
            "webhook_api_version": "2",
        },
        max_redirects=0,
    )
    assert forged.status == 403
    forged_delete = await page.request.post(
        f"{base}/console/recordings/{recording_id}/delete",
        form={"csrf_token": "0" * 64},
        max_redirects=0,
    )
    assert forged_delete.status == 403
    await page.goto(f"{base}/console/applications")
    assert "forged" not in await page.content()

    # the phone's width
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    await phone.add_cookies([{**cookie}])  # type: ignore[list-item]
    phone_page = await phone.new_page()
    await phone_page.goto(f"{base}/console/recordings")
    scroll_width = await phone_page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= 390, "the page scrolls sideways at a phone's width"
    await shot(phone_page, "recordings-phone")
    await phone.close()

    # sign out ends the session (the cookie alone no longer works)
    await page.goto(f"{base}/console")
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/console/login")
    async with runtime.sessions() as session:
        left = await session.scalar(
            select(ConsoleSession.token_hash).where(ConsoleSession.account_id == account.account_id)
        )
    assert left is None
    async with httpx.AsyncClient(base_url=base, cookies={cookie["name"]: cookie["value"]}) as c:
        after = await c.get("/console")
    assert after.status_code == 303 and after.headers["location"] == "/console/login"

    # every page carried the strict policy, nothing broke it, nothing left the origin
    assert traffic.documents
    for document in traffic.documents:
        policy = await document.header_value("content-security-policy")
        assert policy is not None and "default-src 'none'" in policy, document.url
    assert not [e for e in traffic.console_errors if "Content Security Policy" in e]
    outside = [url for url in traffic.requests if not url.startswith(f"{base}/")]
    assert outside == [], outside
    assert len(traffic.requests) > 20
    await context.close()


async def test_recording_in_the_default_store_plays(
    browser: Browser,
    live_server: LiveServer,
    runtime: Runtime,
    account: NewAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    """Without custom storage the player reads the default store."""
    connection_id = await add_application(runtime, account.account_id)
    recording_id = await ingest(live_server, runtime, connection_id)
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await sign_in(page, live_server, account.api_key)
    await page.goto(f"{live_server.url}/console/recordings/{recording_id}")
    await reload_until(page, "default store")
    async with page.expect_response(lambda r: r.url.endswith("/audio")) as audio_info:
        await page.reload()
    audio = await audio_info.value
    assert audio.status == 200
    assert audio.headers["content-type"] == "audio/wav"
    await player_has_metadata(page)
    await context.close()


async def test_a_failed_recording_is_redelivered_and_deleted_from_its_page(
    browser: Browser,
    live_server: LiveServer,
    runtime: Runtime,
    account: NewAccount,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
) -> None:
    bucket = f"console-{uuid.uuid4().hex[:10]}"
    seaweedfs.create_bucket(bucket)
    connection_id = await add_application(runtime, account.account_id)
    api = httpx.AsyncClient(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {account.api_key}"},
        timeout=60,
    )
    async with api:
        await api.patch(
            f"/v2/call_control_applications/{connection_id}",
            json={"webhook_event_url": webhook_receiver.url(), "webhook_api_version": "2"},
        )
        wrong = await api.post(
            f"/v2/custom_storage_credentials/{connection_id}",
            json={
                "backend": "s3-generic",
                "configuration": {
                    "bucket": bucket,
                    "region": seaweedfs.region,
                    "endpoint": seaweedfs.endpoint,
                    "aws_access_key_id": seaweedfs.access_key,
                    "aws_secret_access_key": "wrong-secret-0123456789",
                },
            },
        )
        assert wrong.status_code == 200, wrong.text
    recording_id = await ingest(live_server, runtime, connection_id)
    (error,) = await webhook_receiver.wait_for(1, within=60)
    assert error.event_type == "call.recording.error"

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await sign_in(page, live_server, account.api_key)

    # the failure, its reason, and the Validate button saying why
    await page.goto(f"{live_server.url}/console/recordings/{recording_id}")
    assert ">failed<" in await page.content()
    last_error = await page.locator("dt:has-text('Last error') + dd").inner_text()
    assert "SignatureDoesNotMatch" in last_error or "secret" in last_error.lower(), last_error
    # the audio still plays: the recording is kept in the default store
    assert "default store" in await page.locator("dl.facts").first.inner_text()
    await shot(page, "recording-failed")
    await page.goto(f"{live_server.url}/console/applications/{connection_id}")
    await page.get_by_role("button", name="Validate").click()
    failed = await page.locator("#validation-result").inner_text()
    assert failed.startswith("Validation failed: s3-generic bucket"), failed

    # without custom storage, Redeliver stores it in the default store with a new webhook
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete storage settings").click()
    await page.get_by_text("Storage settings deleted").wait_for()
    await page.goto(f"{live_server.url}/console/recordings/{recording_id}")
    await page.get_by_role("button", name="Redeliver").click()
    await page.get_by_text("Queued for redelivery.").wait_for()
    saved = await webhook_receiver.wait_for(
        1, within=60, where=lambda d: d.event_type == "call.recording.saved"
    )
    assert saved[0].payload["recording_id"] == recording_id
    await reload_until(page, ">stored<")

    # delete asks first, then the recording is gone (404 in the console)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete", exact=True).click()
    await page.wait_for_url(re.compile(r"/console/recordings\?flash=recording-deleted"))
    assert "Recording deleted." in await page.content()
    gone = await page.goto(f"{live_server.url}/console/recordings/{recording_id}")
    assert gone is not None and gone.status == 404
    await context.close()
