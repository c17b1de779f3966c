"""Real operating-system faults the fault tests make themselves (as root): a small filesystem
that fills up (tmpfs) and network namespaces joined by veth pairs whose links get `tc netem`
latency, loss and partitions. Everything is undone when the `with` block ends, whatever
happened inside it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path` (a real ENOSPC when it is full); unmounted
    afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        run("umount", "-l", str(path), check=False)


def fill(path: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about `leave_bytes` free on `path`'s filesystem."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    ballast = path / "ballast"
    with ballast.open("wb") as out:
        remaining = max(0, free - leave_bytes)
        chunk = b"\0" * (1 << 16)
        while remaining > 0:
            out.write(chunk[: min(len(chunk), remaining)])
            remaining -= len(chunk)
    return ballast


@dataclass
class Namespace:
    """A network namespace `name` with a veth link to the host namespace:
    host side `host_ip` on `host_if`, inside `inner_ip` on `inner_if` (a /30)."""

    name: str
    host_if: str
    inner_if: str
    host_ip: str
    inner_ip: str
    netem: list[str] = field(default_factory=list)

    def exec_args(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def shape(self, *netem: str) -> None:
        """`tc netem` on both ends of the link (e.g. "delay", "150ms", "loss", "2.5%"): a
        round trip sees twice the delay and about twice the loss."""
        verb = "change" if self.netem else "add"
        for device, inside in ((self.host_if, False), (self.inner_if, True)):
            command = ["tc", "qdisc", verb, "dev", device, "root", "netem", *netem]
            run(*(self.exec_args(*command) if inside else command))
        self.netem = list(netem)

    def partition(self, on: bool) -> None:
        """Drop every packet on the link (100 % loss) or restore the current shaping."""
        if on:
            self.shape("loss", "100%")
        else:
            self.shape(*(self._normal or ["delay", "0ms"]))

    _normal: list[str] = field(default_factory=list)

    def normal(self, *netem: str) -> None:
        self._normal = list(netem)
        self.shape(*netem)


@contextlib.contextmanager
def namespace(subnet_octet: int) -> Iterator[Namespace]:
    """A namespace joined to the host by a veth pair on 10.231.<octet>.0/30 (private,
    loopback-style: nothing outside this machine routes it). Deleted afterwards."""
    tag = uuid.uuid4().hex[:6]
    ns = Namespace(
        name=f"cvns-{tag}",
        host_if=f"cvh{tag}",
        inner_if=f"cvi{tag}",
        host_ip=f"10.231.{subnet_octet}.1",
        inner_ip=f"10.231.{subnet_octet}.2",
    )
    run("ip", "netns", "add", ns.name)
    try:
        run("ip", "link", "add", ns.host_if, "type", "veth", "peer", "name", ns.inner_if)
        run("ip", "link", "set", ns.inner_if, "netns", ns.name)
        run("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        run("ip", "link", "set", ns.host_if, "up")
        run(*ns.exec_args("ip", "addr", "add", f"{ns.inner_ip}/30", "dev", ns.inner_if))
        run(*ns.exec_args("ip", "link", "set", ns.inner_if, "up"))
        run(*ns.exec_args("ip", "link", "set", "lo", "up"))
        yield ns
    finally:
        run("ip", "link", "del", ns.host_if, check=False)
        run("ip", "netns", "del", ns.name, check=False)
