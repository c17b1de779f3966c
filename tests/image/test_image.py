"""The container image, built from the working tree and run the way an operator runs it
(docs/deploy.md): one container on embedded defaults, then the scaled-out layout of API and
worker containers against PostgreSQL with an S3 default store. Every container uses
`--network host`, so the SeaweedFS of tests/servers.py, the webhook receiver and PostgreSQL are
on its loopback (hence CALLVAULT_ALLOW_PRIVATE_NETWORKS=true). Webhooks are verified with the
official SDK; stored bytes are read back from the bucket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from callvault.storage.factory import open_custom_store
from tests.faults.cluster import fresh_database, query
from tests.image.podman import BuiltImage, Container, podman, run_once
from tests.receiver import Delivery, WebhookReceiver
from tests.servers import SeaweedFS, free_port
from tests.worker.flow import bearer, create_application, ingest, make_wav, set_credentials

START_TIMEOUT = 60.0  # a loaded machine: the container's Python starts in ~2 s when idle
WEBHOOK_TIMEOUT = 60.0
# anything that looks like a secret the image must not carry
SECRET_NAMES = ("KEY", "TOKEN", "SECRET", "PASSWORD")


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """Containers a test starts; removed afterwards, even when it fails."""
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"callvault-test-{secrets.token_hex(5)}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


async def wait_healthy(url: str, container: Container) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not container.state()["Running"]:
                raise AssertionError(f"{container.name} not healthy:\n{container.logs()[-3000:]}")
            await asyncio.sleep(0.2)


def s3_generic(seaweedfs: SeaweedFS) -> dict[str, Any]:
    bucket = f"image-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(bucket)
    return {
        "bucket": bucket,
        "region": seaweedfs.region,
        "endpoint": seaweedfs.endpoint,
        "aws_access_key_id": seaweedfs.access_key,
        "aws_secret_access_key": seaweedfs.secret_key,
    }


async def assert_saved(
    receiver: WebhookReceiver,
    public_key: str,
    recording_id: str,
    audio: bytes,
    configuration: dict[str, Any],
    sent: dict[str, Any],
    account_id: str,
) -> None:
    """The verified `call.recording.saved` of this recording names the object in the customer's
    bucket, and the object there holds the very bytes."""

    def saved_for_it(delivery: Delivery) -> bool:
        return (
            delivery.answered == 200
            and delivery.event_type == "call.recording.saved"
            and delivery.payload["recording_id"] == recording_id
        )

    [delivery, *_] = await receiver.wait_for(1, within=WEBHOOK_TIMEOUT, where=saved_for_it)
    assert receiver.verify(delivery, public_key) is not None  # the SDK's unwrap
    day = sent["recording_started_at"][:10]
    seconds = int(datetime.fromisoformat(sent["recording_started_at"]).timestamp())
    key = f"{account_id}/{day}/{sent['call_leg_id']}-{seconds}"
    bucket, endpoint = configuration["bucket"], configuration["endpoint"]
    assert delivery.payload["recording_urls"] == {"wav": f"{endpoint}/{bucket}/{key}"}
    store = open_custom_store("s3-generic", configuration, allow_private_networks=True)
    stored = b"".join([chunk async for chunk in store.get_stream(key)])
    assert hashlib.sha256(stored).digest() == hashlib.sha256(audio).digest()


def assert_stopped_cleanly(container: Container, seconds: float, within: float) -> None:
    state = container.state()
    logs = container.logs()
    # SIGTERM handled: a clean exit, not podman's SIGKILL after --time (exit 137)
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']}:\n{logs[-3000:]}"
    assert seconds < within, f"stop took {seconds:.1f} s"
    assert '"event": "worker stopped"' in logs, logs[-3000:]


# --------------------------------------------------------------------------------------------


def test_image_runs_as_non_root_and_carries_no_secret(callvault_image: BuiltImage) -> None:
    [inspected] = json.loads(podman("image", "inspect", callvault_image.ref).stdout)
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["callvault", "serve", "--host", "0.0.0.0"]
    assert "/var/lib/callvault" in config["Volumes"]
    assert "CALLVAULT_DATA_DIR=/var/lib/callvault" in config["Env"]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "python3", "/opt/callvault/healthcheck.py"]
    assert config.get("StopSignal") == "SIGTERM"
    for variable in config["Env"]:
        name = variable.split("=", 1)[0]
        assert not any(word in name for word in SECRET_NAMES), variable
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", callvault_image.ref)
    assert not any(word in history.stdout for word in ("AWS_", "INGEST_TOKEN", "ENCRYPTION_KEYS"))
    # no key, token or credentials file anywhere; the data dir is empty until the first start
    found = run_once(
        callvault_image.ref,
        "sh", "-c",
        "ls -A /var/lib/callvault; find / -xdev -type f \\( -name '*.key' -o -name '*.token' "
        "-o -name '*.pem' -o -name '.env' -o -name credentials -o -name 'credentials.json' \\) "
        "-not -path '/etc/ssl/*' -not -path '/usr/share/ca-certificates/*' "
        "-not -path '*/site-packages/certifi/*' "
        "-not -path '*/site-packages/botocore/cacert.pem' -print",
        network="none",
        options=("--user", "0"),  # to look everywhere
    )  # fmt: skip
    assert found.split() == []
    assert run_once(callvault_image.ref, "id", "-u", network="none").strip() == "10001"
    # 436 MB with PyAV's FFmpeg (104 MB, the media-server hand-off): docs/deploy.md
    assert callvault_image.size_bytes < 450e6, "the image grew: check what the last change added"


async def test_one_container_on_embedded_defaults(
    callvault_image: BuiltImage,
    containers: list[Container],
    volume: str,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Container(
        callvault_image.ref,
        ["callvault", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={"CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true"},
        options=["--volume", f"{volume}:/var/lib/callvault"],
    )
    containers.append(server.start())
    await wait_healthy(url, server)
    # the image's HEALTHCHECK finds the port in the command line
    assert podman("healthcheck", "run", server.name, check=False).returncode == 0

    # the operator's first steps, inside the running container
    account = json.loads(server.exec("callvault", "accounts", "create", "image test", "--json"))
    ingest_token = server.exec("cat", "/var/lib/callvault/ingest.token").strip()
    configuration = s3_generic(seaweedfs)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        connection_id = await create_application(client, account["api_key"], webhook_receiver.url())
        await set_credentials(
            client, account["api_key"], connection_id, "s3-generic", configuration
        )
        audio = make_wav(0.5)
        recording_id, sent = await ingest(client, ingest_token, connection_id, audio)
        await assert_saved(
            webhook_receiver,
            account["webhook_public_key"],
            recording_id,
            audio,
            configuration,
            sent,
            account["account_id"],
        )

    # SIGTERM, then the same container again: everything was kept in the volume (database,
    # generated key and ingest token: the stored credentials still open)
    seconds = server.stop()
    assert_stopped_cleanly(server, seconds, within=25)
    server.restart()
    await wait_healthy(url, server)
    assert server.exec("cat", "/var/lib/callvault/ingest.token").strip() == ingest_token
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.get(
            f"/v2/recordings/{recording_id}", headers=bearer(account["api_key"])
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["storage"]["state"] == "stored"
        audio = make_wav(0.4)
        again, sent = await ingest(client, ingest_token, connection_id, audio)
        await assert_saved(
            webhook_receiver,
            account["webhook_public_key"],
            again,
            audio,
            configuration,
            sent,
            account["account_id"],
        )


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_api_and_worker_containers_scaled_out(
    callvault_image: BuiltImage,
    containers: list[Container],
    database: str,
    seaweedfs: SeaweedFS,
    webhook_receiver: WebhookReceiver,
    tmp_path: Path,
) -> None:
    default_bucket = f"default-{secrets.token_hex(6)}"
    seaweedfs.create_bucket(default_bucket)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # what every process of the deployment shares (docs/deploy.md)
    env = {
        "CALLVAULT_DATABASE_URL": database,
        "CALLVAULT_DEFAULT_STORE": (
            f"s3://{default_bucket}?region={seaweedfs.region}&endpoint={seaweedfs.endpoint}"
        ),
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CALLVAULT_INGEST_TOKEN": secrets.token_urlsafe(32),
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",
    }
    image = callvault_image.ref
    # one-off containers: the migration (a deployment step), then an account
    run_once(image, "callvault", "migrate", env=env)
    account = json.loads(
        run_once(image, "callvault", "accounts", "create", "scaled", "--json", env=env)
    )
    # a read-only root filesystem, as a hardened deployment runs it: only the data dir (a
    # volume) and /tmp are written
    api = Container(
        image,
        ["callvault", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "CALLVAULT_PUBLIC_URL": url},
        options=["--read-only"],
    )
    # a lease far longer than the test: what this worker holds at SIGTERM is taken over by the
    # next worker only if it was released
    first_worker = Container(
        image,
        ["callvault", "worker"],
        env={**env, "CALLVAULT_WORKER_LEASE_SECS": "600", "CALLVAULT_WORKER_DRAIN_SECS": "2"},
        options=["--read-only"],
    )
    containers.extend([api.start(), first_worker.start()])
    await wait_healthy(url, api)
    assert podman("healthcheck", "run", first_worker.name, check=False).returncode == 0

    configuration = s3_generic(seaweedfs)
    public_key = account["webhook_public_key"]
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        connection_id = await create_application(
            client, account["api_key"], webhook_receiver.url(), timeout_secs=30
        )
        await set_credentials(
            client, account["api_key"], connection_id, "s3-generic", configuration
        )
        # a recording through the CLI in a one-off container, the file mounted read-only
        audio = make_wav(0.5)
        recording = tmp_path / "call.wav"
        recording.write_bytes(audio)
        recording.chmod(0o644)  # readable by the image's user (uid 10001)
        leg = secrets.token_hex(8)
        started_at = "2026-01-02T03:04:05Z"
        recording_id = run_once(
            image,
            "callvault", "ingest", "/recordings/call.wav",
            "--connection-id", connection_id, "--call-control-id", f"v3:{leg}",
            "--call-leg-id", leg, "--started-at", started_at, "--server", url,
            env={"CALLVAULT_INGEST_TOKEN": env["CALLVAULT_INGEST_TOKEN"]},
            options=("--volume", f"{recording}:/recordings/call.wav:ro"),
        ).strip()  # fmt: skip
        sent = {"recording_started_at": started_at, "call_leg_id": leg}
        await assert_saved(
            webhook_receiver,
            public_key,
            recording_id,
            audio,
            configuration,
            sent,
            account["account_id"],
        )

        # the webhooks of the next three hang: the worker holds them when it gets SIGTERM
        webhook_receiver.stall(40, times=3)
        audio = make_wav(0.3)
        held = [
            await ingest(client, env["CALLVAULT_INGEST_TOKEN"], connection_id, audio)
            for _ in range(3)
        ]
        await webhook_receiver.wait_for(4, within=WEBHOOK_TIMEOUT)
        seconds = first_worker.stop()
        assert_stopped_cleanly(first_worker, seconds, within=25)
        assert '"event": "leases released"' in first_worker.logs()
        leased = await query(
            database,
            "SELECT id FROM webhook_events WHERE lease_owner IS NOT NULL "
            "UNION ALL SELECT id FROM recordings WHERE lease_owner IS NOT NULL",
        )
        assert leased == []

        containers.append(Container(image, ["callvault", "worker"], env=env).start())
        for recording_id, sent in held:
            await assert_saved(
                webhook_receiver,
                public_key,
                recording_id,
                audio,
                configuration,
                sent,
                account["account_id"],
            )
            response = await client.get(
                f"/v2/recordings/{recording_id}", headers=bearer(account["api_key"])
            )
            assert response.json()["data"]["storage"] == {
                **response.json()["data"]["storage"],
                "state": "stored",
                "location": "custom",
            }
