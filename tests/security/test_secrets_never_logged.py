"""No secret reaches a log, an API response or the database in clear, through a whole flow:
account, applications, credentials for every backend (validated live against the real test
servers, one with a wrong secret), ingest to custom and default storage, webhook deliveries,
reading credentials back.

Every log channel is captured: structlog as `callvault.logs.configure_logging` sets it up (at
DEBUG), the standard library's logging (at DEBUG: every library's records, SQLAlchemy's
statements with their parameters) and uvicorn's own loggers (access log on), of a real server.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from callvault.accounts.models import Account
from callvault.accounts.service import create_account, signing_key
from callvault.app import create_app
from callvault.config import Settings
from callvault.db import transaction
from callvault.logs import configure_logging
from callvault.runtime import Runtime
from tests.conftest import free_port
from tests.credentials.test_at_rest import database_text
from tests.receiver import WebhookReceiver
from tests.security.flows import metadata, post_ingest
from tests.servers import Azurite, FakeGCS, GcsAuthGateway, SeaweedFS, ServiceAccount
from tests.worker.flow import wait_until


class LockedBuffer(io.StringIO):
    """One sink for every logger; the server thread and the test write to it concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return super().write(text)


@contextlib.contextmanager
def captured_logs() -> Iterator[LockedBuffer]:
    buffer = LockedBuffer()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    # SQLAlchemy keeps its own loggers at WARNING; statements and their parameters are logged
    # from INFO, which an operator may well turn on
    sql = logging.getLogger("sqlalchemy.engine")
    old_sql_level = sql.level
    sql.setLevel(logging.INFO)
    with contextlib.redirect_stderr(buffer):
        # PrintLoggerFactory takes sys.stderr as it is now: our buffer
        configure_logging(logging.DEBUG)
    # the product caches loggers on first use; here they must not outlive the test's buffer
    structlog.configure(cache_logger_on_first_use=False)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        sql.setLevel(old_sql_level)
        structlog.reset_defaults()


@contextlib.contextmanager
def logged_server(settings: Settings, buffer: io.StringIO) -> Iterator[str]:
    """`callvault serve` with the worker, uvicorn logging at debug with access logs."""
    port = free_port()
    settings = dataclasses.replace(settings, public_url=f"http://127.0.0.1:{port}")
    app = create_app(Runtime.build(settings), run_worker=True)
    with contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
        # uvicorn's logging config binds its handlers to the streams of this moment
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="debug", access_log=True
        )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def secret_forms(value: str) -> set[str]:
    """A secret as it could appear in a log: as is, JSON-escaped, and line by line (PEM)."""
    forms = {value, json.dumps(value)[1:-1]}
    forms |= {
        line for line in value.splitlines() if len(line) >= 16 and not line.startswith("-----")
    }
    return {form for form in forms if len(form) >= 8}


@pytest.fixture
def backends_env(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: SeaweedFS,
    azure_endpoint_env: Azurite,
    gcs_emulator_env: GcsAuthGateway,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs.endpoint)


async def test_no_secret_in_logs_responses_or_database(
    settings: Settings,
    runtime: Runtime,
    backends_env: None,
    seaweedfs: SeaweedFS,
    azurite: Azurite,
    fake_gcs: FakeGCS,
    gcs_service_account: ServiceAccount,
    webhook_receiver: WebhookReceiver,
) -> None:
    bucket = f"secrets-{secrets.token_hex(4)}"
    seaweedfs.create_bucket(bucket)
    azurite.create_container(bucket)
    fake_gcs.create_bucket(bucket)
    wrong_secret = "wrong-" + secrets.token_urlsafe(24)
    configurations: dict[str, dict[str, Any]] = {
        "s3": {
            "bucket": bucket,
            "region": seaweedfs.region,
            "aws_access_key_id": seaweedfs.access_key,
            "aws_secret_access_key": seaweedfs.secret_key,
        },
        "s3-generic": {
            "bucket": bucket,
            "region": seaweedfs.region,
            "endpoint": seaweedfs.endpoint,
            "aws_access_key_id": seaweedfs.access_key,
            "aws_secret_access_key": seaweedfs.secret_key,
        },
        "gcs": {"bucket": bucket, "credentials": gcs_service_account.json},
        "azure": {
            "bucket": bucket,
            "account_name": azurite.account_name,
            "account_key": azurite.account_key,
        },
    }
    responses: list[httpx.Response] = []

    with captured_logs() as logs:
        async with transaction(runtime.sessions) as session:
            account = await create_account(session, settings.keyring, "secrets")
        headers = {"Authorization": f"Bearer {account.api_key}"}
        with logged_server(settings, logs) as base_url:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

                async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
                    response = await client.request(method, path, headers=headers, **kwargs)
                    responses.append(response)
                    assert response.status_code < 300, response.text
                    return response

                connections: dict[str, str] = {}
                for name, configuration in [
                    *configurations.items(),
                    (
                        "wrong",
                        {**configurations["s3-generic"], "aws_secret_access_key": wrong_secret},
                    ),
                    ("default", None),
                ]:
                    created = await call(
                        "POST",
                        "/v2/call_control_applications",
                        json={
                            "application_name": f"secrets {name}",
                            "webhook_event_url": webhook_receiver.url(f"/{name}"),
                            "webhook_api_version": "2",
                        },
                    )
                    connection_id = created.json()["data"]["id"]
                    connections[name] = connection_id
                    if configuration is None:
                        continue
                    backend = "s3-generic" if name == "wrong" else name
                    path = f"/v2/custom_storage_credentials/{connection_id}"
                    await call(
                        "POST", path, json={"backend": backend, "configuration": configuration}
                    )
                    validated = await call("POST", f"{path}/actions/validate")
                    expected = "failed" if name == "wrong" else "ok"
                    assert validated.json()["data"]["status"] == expected, (name, validated.text)
                    await call("GET", path)

                for name in ("s3-generic", "gcs", "wrong", "default"):
                    ingested = await post_ingest(
                        client, settings.ingest_token, metadata(connections[name])
                    )
                    responses.append(ingested)
                    assert ingested.status_code == 202, ingested.text
                deliveries = await webhook_receiver.wait_for(4, within=30)
                for delivery in deliveries:
                    webhook_receiver.verify(delivery, account.webhook_public_key)
                assert {d.event_type for d in deliveries} == {
                    "call.recording.saved",
                    "call.recording.error",
                }

                async def worker_logged_its_rounds() -> bool:
                    # a round's line is logged once its answers are in: after the receiver saw it
                    return logs.getvalue().count("webhook delivered") >= 4

                await wait_until(worker_logged_its_rounds, what="the webhook rounds' logs")
                listed = await call("GET", "/v2/recordings", params={"page[size]": 250})
                for item in listed.json()["data"]:
                    for link in item.get("download_urls", {}).values():
                        if link.startswith(base_url):
                            responses.append(await client.get(link))
                await call("GET", "/v2/webhook_signing_key")

    async with runtime.sessions() as session:
        stored = await session.get(Account, account.account_id)
    assert stored is not None
    private = signing_key(stored, settings.keyring)
    raw_private = private.private_bytes_raw()
    pem_private = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    secret_values = {
        "s3 secret key": seaweedfs.secret_key,
        "wrong s3 secret key": wrong_secret,
        "azure account key": azurite.account_key,
        "gcs private key": gcs_service_account.private_key,
        "gcs credentials json": gcs_service_account.json,
        "API key": account.api_key,
        "ingest token": settings.ingest_token,
        "link secret (base64)": base64.b64encode(settings.link_secret).decode(),
        "link secret (hex)": settings.link_secret.hex(),
        "Ed25519 private key (base64)": base64.b64encode(raw_private).decode(),
        "Ed25519 private key (hex)": raw_private.hex(),
        "Ed25519 private key (PEM)": pem_private,
    }
    for index, key in enumerate(settings.encryption_keys_b64):
        secret_values[f"encryption key {index}"] = key
        secret_values[f"encryption key {index} (hex)"] = base64.b64decode(key).hex()

    log_text = logs.getvalue()
    # the capture really holds the flow's logs (else the search below proves nothing)
    assert "recording stored" in log_text, log_text[-2000:]
    assert "POST /internal/v1/recordings" in log_text  # uvicorn's access log
    assert "SELECT" in log_text  # SQLAlchemy's statements
    assert log_text.count("webhook delivered") >= 4  # the worker's rounds
    response_text = "\n".join(
        r.text for r in responses if "audio" not in r.headers.get("content-type", "")
    )
    assert "custom_storage_credentials" in response_text
    database = (await database_text(runtime)).decode("utf-8", "replace")

    leaks = [
        f"{what} in {where}"
        for what, value in secret_values.items()
        for form in secret_forms(value)
        for where, text in (
            ("logs", log_text),
            ("responses", response_text),
            ("database", database),
        )
        if form in text
    ]
    assert sorted(set(leaks)) == []


@pytest.mark.parametrize(
    "configuration",
    [
        {"backend": "azure", "configuration": {"account_name": "acct1", "account_key": "{s}!!"}},
        {"backend": "gcs", "configuration": {"credentials": '{"private_key": "{s}"'}},
        {
            "backend": "gcs",
            "configuration": {"credentials": '{"type": "x", "private_key": "{s}"}'},
        },
        {"backend": "s3", "configuration": {"region": "{s}", "aws_secret_access_key": "{s}"}},
        {"backend": "s3-generic", "configuration": {"endpoint": "http://u:{s}@x.com"}},
        {"backend": "s3-generic", "configuration": {"endpoint": "{s}"}},
        {"backend": "{s}", "configuration": {"aws_secret_access_key": "{s}"}},
    ],
)
async def test_a_refused_configuration_is_not_echoed_in_the_error(api, account, configuration):
    from tests.security.flows import create_application

    secret = "NeverEcho" + secrets.token_hex(16)
    body = json.loads(json.dumps(configuration).replace("{s}", secret))
    body["configuration"] = {
        "bucket": "refused-bucket",
        "region": "us-east-1",
        "aws_access_key_id": "AKIAREFUSED",
        **body["configuration"],
    }
    connection_id = await create_application(api, account)
    response = await api.post(
        f"/v2/custom_storage_credentials/{connection_id}",
        json=body,
        headers={"Authorization": f"Bearer {account.api_key}"},
    )
    assert response.status_code == 422, response.text
    assert secret not in response.text
