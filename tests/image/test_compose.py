"""compose.yaml run for real with podman-compose (Debian's 1.0.3): PostgreSQL and SeaweedFS from
`make compose-images` (built offline), callvault from `make image`, two API containers and two
workers (`deploy.replicas`), the steps of docs/deploy.md (`up -d postgres seaweedfs`, the
bucket, `run --rm migrate`, `up -d`).

The test runs the repo's compose.yaml with only what this machine needs changed, in a copy:
every service on the host's network (the only network here is loopback: the customer's bucket
and the webhook receiver are host processes) and so on ports of its own, and the images by id.
Services, commands, env_file, depends_on, replicas, volumes and restart policies are the file's.

A recording goes in through an API container and lands in the customer's bucket with a
verified webhook; a worker container is killed mid-ingest and the other finishes its work;
`podman-compose down` then `up -d` keeps every recording.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml
from image.build import ROOT, podman_environment

from tests.faults.cluster import Sent, ingest_until_accepted, list_bucket, verify_signature
from tests.faults.wavs import noise_wav
from tests.image.podman import BuiltImage, ServiceImages
from tests.receiver import WebhookReceiver
from tests.servers import SeaweedFS, _s3_request, free_port
from tests.worker.flow import create_application, ingest_metadata, set_credentials

RECORDINGS = 16
DEFAULT_BUCKET = "callvault-recordings"
START_TIMEOUT = 90.0
CONVERGE_WITHIN = 120.0
WEED_PORTS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
    "volume.port.grpc", "filer.port", "filer.port.grpc", "webdav.port", "admin.port",
    "admin.port.grpc",
)  # fmt: skip


# podman-compose 1.0.3 puts every container on the project's network too (`--net P_default
# --network-alias S`), even with `network_mode: host`, and podman refuses the pair; this shim,
# given as --podman-path, drops those two options when --network host is there
HOST_NETWORK_SHIM = """#!/usr/bin/env python3
import os, sys
args = sys.argv[1:]
if args[:1] == ["run"] and "--network" in args and args[args.index("--network") + 1] == "host":
    kept, skip = [], 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg in ("--net", "--network-alias"):
            skip = 1
        else:
            kept.append(arg)
    args = kept
os.execvp("podman", ["podman", *args])
"""


@dataclass
class DefaultStore:
    """The compose SeaweedFS as tests/servers.py's signer sees a server."""

    port: int
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Project:
    name: str
    directory: Path
    api_ports: list[int]
    postgres_url: str
    store: DefaultStore
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [
                "podman-compose",
                "--podman-path",
                str(self.directory / "podman-host-network"),
                "-p",
                self.name,
                "-f",
                str(self.directory / "compose.yaml"),
                *args,
            ],
            cwd=self.directory,
            env=podman_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"podman-compose {args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def podman(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["podman", *args], env=podman_environment(), capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert not check or done.returncode == 0, done.stderr
        return done.stdout

    def logs(self) -> str:
        names = self.podman("ps", "-a", "--filter", f"name={self.name}_", "--format", "{{.Names}}")
        return "\n".join(
            f"--- {n}\n{self.podman('logs', '--tail', '15', n, check=False)}" for n in names.split()
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_ports[0]}"


def host_layout(
    compose: dict[str, Any], project: Project, callvault: str, images: ServiceImages
) -> dict[str, Any]:
    """compose.yaml with every service on the host's network and ports of its own."""
    services = compose["services"]
    for service in services.values():
        service["network_mode"] = "host"
        service.pop("ports", None)
        if "env_file" in service:  # callvault's processes: the database by loopback address
            service["environment"] = {
                **service.get("environment", {}),
                "CALLVAULT_DATABASE_URL": project.postgres_url.replace(
                    "@127.0.0.1", f":{project.env['POSTGRES_PASSWORD']}@127.0.0.1"
                ),
            }
            service["image"] = callvault
    pg_port = project.postgres_url.rsplit(":", 1)[1].split("/")[0]
    postgres = services["postgres"]
    postgres["image"] = images.postgres
    postgres["command"] = ["postgres", "-c", "listen_addresses=127.0.0.1"]
    postgres["environment"] = {**postgres["environment"], "PGPORT": pg_port}
    postgres["healthcheck"]["test"] = [
        "CMD", "pg_isready", "-h", "127.0.0.1", "-p", pg_port, "-U", "callvault",
    ]  # fmt: skip
    services["seaweedfs"]["image"] = images.seaweedfs
    weed_ports = {flag: free_port() for flag in WEED_PORTS}
    weed_ports["s3.port"] = project.store.port
    services["seaweedfs"]["command"] = [
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=100",
        *(f"-{flag}={port}" for flag, port in weed_ports.items()),
    ]  # fmt: skip
    for name, port in zip(("api-1", "api-2"), project.api_ports, strict=True):
        services[name]["command"] = [
            "callvault", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
    return compose


@contextlib.contextmanager
def compose_project(
    tmp_path: Path, callvault_image: BuiltImage, images: ServiceImages
) -> Iterator[Project]:
    directory = tmp_path / "deploy"
    directory.mkdir()
    name = f"cvtest{uuid.uuid4().hex[:8]}"
    pg_port = free_port()
    store = DefaultStore(free_port(), "callvault-compose", secrets.token_hex(16))
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "CALLVAULT_DEFAULT_STORE": (
            f"s3://{DEFAULT_BUCKET}?region=us-east-1&endpoint=http://127.0.0.1:{store.port}"
        ),
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": store.secret_key,
        "CALLVAULT_ENCRYPTION_KEYS": base64.b64encode(os.urandom(32)).decode(),
        "CALLVAULT_INGEST_TOKEN": secrets.token_urlsafe(24),
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "true",  # the customer's bucket is on loopback
        "CALLVAULT_WORKER_LEASE_SECS": "5",  # a killed worker's jobs come back soon
        "CALLVAULT_WEBHOOK_SCHEDULE": "1,1,2,2,5,5,5,5",
    }
    project = Project(
        name,
        directory,
        [free_port(), free_port()],
        f"postgresql://callvault@127.0.0.1:{pg_port}/callvault",
        store,
        env,
    )
    shim = directory / "podman-host-network"
    shim.write_text(HOST_NETWORK_SHIM)
    shim.chmod(0o755)
    (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    os.chmod(directory / ".env", 0o600)
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    layout = host_layout(compose, project, callvault_image.ref, images)
    (directory / "compose.yaml").write_text(yaml.safe_dump(layout, sort_keys=False))
    try:
        yield project
    finally:
        with contextlib.suppress(Exception):
            project.compose("down", "-t", "5", timeout=180)
        for volume in ("postgres-data", "seaweedfs-data"):
            project.podman("volume", "rm", "--force", f"{name}_{volume}", check=False)
        project.podman("network", "rm", "--force", f"{name}_default", check=False)


async def wait_for(check: Any, within: float, what: str, project: Project) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}\n{project.logs()}"
        await asyncio.sleep(0.3)


async def postgres_answers(project: Project) -> bool:
    url = project.postgres_url.replace("@", f":{project.env['POSTGRES_PASSWORD']}@")
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


async def apis_ready(project: Project) -> bool:
    async with httpx.AsyncClient(timeout=2) as http:
        for port in project.api_ports:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def test_compose_layout_runs_kills_a_worker_and_survives_down_up(
    tmp_path: Path,
    callvault_image: BuiltImage,
    service_images: ServiceImages,
    seaweedfs: SeaweedFS,
) -> None:
    started = time.monotonic()
    customer = {
        "bucket": f"compose-{secrets.token_hex(6)}",
        "region": seaweedfs.region,
        "endpoint": seaweedfs.endpoint,
        "aws_access_key_id": seaweedfs.access_key,
        "aws_secret_access_key": seaweedfs.secret_key,
    }
    seaweedfs.create_bucket(customer["bucket"])
    with (
        compose_project(tmp_path, callvault_image, service_images) as project,
        WebhookReceiver() as receiver,
    ):
        # docs/deploy.md's steps
        project.compose("up", "-d", "postgres", "seaweedfs")
        await wait_for(lambda: postgres_answers(project), START_TIMEOUT, "postgres", project)

        async def bucket_made() -> bool:
            status = await asyncio.to_thread(
                _s3_request, project.store, "PUT", f"/{DEFAULT_BUCKET}"
            )  # type: ignore[arg-type]
            return status in (200, 409)

        await wait_for(bucket_made, START_TIMEOUT, "seaweedfs", project)
        await asyncio.to_thread(project.compose, "run", "--rm", "migrate")
        await asyncio.to_thread(project.compose, "up", "-d")
        await wait_for(lambda: apis_ready(project), START_TIMEOUT, "api", project)
        workers = project.podman(
            "ps", "--filter", f"name={project.name}_worker", "--format", "{{.Names}}"
        ).split()
        assert len(workers) == 2, project.logs()

        account = json.loads(
            project.podman(
                "exec",
                f"{project.name}_api-1_1",
                "callvault",
                "accounts",
                "create",
                "compose",
                "--json",
            )
        )
        headers = {"Authorization": f"Bearer {account['api_key']}"}
        async with httpx.AsyncClient(base_url=project.api, headers=headers, timeout=30) as client:
            connection_id = await create_application(client, account["api_key"], receiver.url())
            await set_credentials(client, account["api_key"], connection_id, "s3-generic", customer)

        sent = [Sent(ingest_metadata(connection_id), noise_wav(0.5)) for _ in range(RECORDINGS)]
        token = project.env["CALLVAULT_INGEST_TOKEN"]

        async def ingest_all() -> None:
            async with httpx.AsyncClient(timeout=30) as http:
                for index, one in enumerate(sent):  # both API containers take ingest
                    url = f"http://127.0.0.1:{project.api_ports[index % 2]}"
                    await ingest_until_accepted(http, url, token, one)

        async def kill_a_worker() -> None:
            while sum(bool(s.recording_id) for s in sent) < RECORDINGS // 4:  # noqa: ASYNC110 (ingest fills it)
                await asyncio.sleep(0.05)
            await asyncio.to_thread(project.podman, "kill", workers[0])

        await asyncio.gather(ingest_all(), kill_a_worker())
        ids = {s.recording_id for s in sent}
        assert len(ids) == RECORDINGS
        saved = await receiver.wait_for(
            RECORDINGS,
            within=CONVERGE_WITHIN,
            where=lambda d: d.answered == 200 and d.event_type == "call.recording.saved",
        )
        assert {d.payload["recording_id"] for d in saved} >= ids
        for delivery in saved:
            verify_signature(delivery, account["webhook_public_key"])
        objects = await list_bucket(seaweedfs, customer["bucket"])
        assert len(objects) == RECORDINGS
        killed = json.loads(project.podman("inspect", workers[0]))[0]["State"]
        assert not killed["Running"] or killed["RestartCount"] > 0  # it was killed indeed

        # down && up: every recording still there (volumes kept)
        await asyncio.to_thread(project.compose, "down", "-t", "15")
        assert not project.podman(
            "ps", "--filter", f"name={project.name}_", "--format", "{{.Names}}"
        ).split()
        await asyncio.to_thread(project.compose, "up", "-d")
        await wait_for(lambda: apis_ready(project), START_TIMEOUT, "api after up", project)
        async with httpx.AsyncClient(base_url=project.api, headers=headers, timeout=30) as client:
            listed = await client.get("/v2/recordings", params={"page[size]": 250})
            assert listed.status_code == 200, listed.text
            after = {r["id"]: r for r in listed.json()["data"]}
            assert after.keys() == ids
            assert {r["storage"]["location"] for r in after.values()} == {"custom"}
            link = next(iter(after.values()))["download_urls"]["wav"]
        async with httpx.AsyncClient(timeout=30) as plain:  # a presigned link: no bearer
            got = await plain.get(link)
        assert got.status_code == 200 and got.content[:4] == b"RIFF", got.text[:300]
        seconds = time.monotonic() - started
        print(f"compose test: {seconds:.0f} s")
