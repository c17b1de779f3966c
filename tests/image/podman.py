"""Podman for the image tests: build the image from the working tree (`make image`) and run its
containers, with the machine's podman settings (image/build.py: runc, cgroupfs, ulimits).

Containers run with `--network host`, so they reach the servers of tests/servers.py, the webhook
receiver and PostgreSQL on the host's loopback. Secrets go to `podman run` through its
environment (`-e NAME` without a value), never on its command line.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from image.build import IMAGE_ID_FILE, ROOT, podman_environment

BUILD_TIMEOUT = 900.0


def podman(
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args],
        env={**podman_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} … exited {done.returncode}:\n{done.stdout}\n"
            f"{without_systemd_noise(done.stderr)}"
        )
    return done


def without_systemd_noise(stderr: str) -> str:
    """Podman logs that it cannot schedule health checks on a machine without systemd; the
    checks still run on demand (`podman healthcheck run`)."""
    return "\n".join(line for line in stderr.splitlines() if "systemd" not in line)


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # the image id
    seconds: float  # what `make image` took this time
    size_bytes: int
    log: str


def build_image() -> BuiltImage:
    """`make image` from the working tree (the layer cache makes a rerun take seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise AssertionError(f"make image failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    # by id: another working tree may tag localhost/callvault:latest meanwhile
    ref = IMAGE_ID_FILE.read_text().strip()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())
    return BuiltImage(ref, seconds, size, done.stdout + done.stderr)


@dataclass(frozen=True)
class ServiceImages:
    postgres: str
    seaweedfs: str
    postgres_bytes: int
    seaweedfs_bytes: int
    seconds: float  # what `make compose-images` took this time


def build_service_images() -> ServiceImages:
    """`make compose-images`: compose.yaml's PostgreSQL and SeaweedFS, offline (cached after
    the first build)."""
    from image.services import POSTGRES_IMAGE, SEAWEEDFS_IMAGE

    started = time.monotonic()
    done = subprocess.run(
        ["make", "--no-print-directory", "compose-images"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise AssertionError(
            f"make compose-images failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    postgres, seaweedfs = f"{POSTGRES_IMAGE}:15", f"{SEAWEEDFS_IMAGE}:latest"

    def size(ref: str) -> int:
        return int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    return ServiceImages(postgres, seaweedfs, size(postgres), size(seaweedfs), seconds)


@dataclass
class Container:
    """One `podman run -d --network host` container; removed (with its anonymous volumes) by
    `remove()`."""

    image: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    name: str = field(default_factory=lambda: f"callvault-test-{uuid.uuid4().hex[:10]}")

    def start(self) -> Container:
        podman(
            "run", "--detach", "--name", self.name, "--network", "host",
            *(arg for name in self.env for arg in ("--env", name)),
            *self.options, self.image, *self.command,
            env=self.env,
        )  # fmt: skip
        return self

    def restart(self) -> None:
        podman("start", self.name)

    def exec(self, *command: str) -> str:
        return podman("exec", self.name, *command).stdout

    def stop(self, timeout: int = 30) -> float:
        """SIGTERM (the STOPSIGNAL), SIGKILL after `timeout` s; returns the seconds taken."""
        started = time.monotonic()
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 60)
        return time.monotonic() - started

    def state(self) -> dict[str, Any]:
        inspected = json.loads(podman("inspect", self.name).stdout)
        return dict(inspected[0]["State"])

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + without_systemd_noise(done.stderr)

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", self.name, check=False)


def run_once(
    image: str,
    *command: str,
    env: Mapping[str, str] | None = None,
    options: tuple[str, ...] = (),
    network: str = "host",
) -> str:
    """`podman run --rm` of one CLI command (a one-off container); returns its stdout."""
    names = list(env or {})
    return podman(
        "run", "--rm", "--network", network,
        *(arg for name in names for arg in ("--env", name)),
        *options, image, *command,
        env=env,
    ).stdout  # fmt: skip
