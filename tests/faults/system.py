"""Real operating-system faults the fault tests make themselves (as root): a small filesystem
that fills up (tmpfs) and network namespaces joined by veth pairs whose links lose packets
(iptables statistic) or are partitioned, plus TCP relays that add latency. Everything is
undone when the `with` block ends, whatever happened inside it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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
    host side `host_ip` on `host_if`, inside `inner_ip` on `inner_if` (a /30).

    Faults on the link, made with iptables inside the namespace (so they vanish with it):
    random loss (`statistic --mode random` DROP on every packet in and out of the veth) and a
    partition (DROP of everything). This machine's kernel has no `sch_netem`
    (`tc qdisc add … netem` answers "Specified qdisc kind is unknown"), so latency is added by
    the relay that runs inside the namespace (tests/faults/relay.py `--delay-ms`)."""

    name: str
    host_if: str
    inner_if: str
    host_ip: str
    inner_ip: str
    loss: float = 0.0

    def exec_args(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def _rules(self, action: str, *match: str) -> None:
        for chain, direction in (("INPUT", "-i"), ("OUTPUT", "-o")):
            rule = [chain, direction, self.inner_if, *match, "-j", "DROP"]
            if action == "-I":
                rule.insert(1, "1")  # first: before the loss rules
            run(*self.exec_args("iptables", action, *rule))

    def set_loss(self, probability: float) -> None:
        """Drop each packet crossing the link (either way) with `probability`."""
        statistic = ["-m", "statistic", "--mode", "random", "--probability"]
        if self.loss:
            self._rules("-D", *statistic, str(self.loss))
        if probability:
            self._rules("-A", *statistic, str(probability))
        self.loss = probability

    def partition(self, on: bool) -> None:
        """Drop every packet on the link (on), or stop doing so."""
        self._rules("-I" if on else "-D")


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


@contextlib.contextmanager
def relay(
    listen: str, target: str, namespace: Namespace | None = None, delay_ms: float = 0
) -> Iterator[str]:
    """A TCP relay process (tests/faults/relay.py) from `listen` (host:port) to `target`,
    inside `namespace` if given, adding `delay_ms` each way; yields `listen`, stopped
    afterwards."""
    command = [
        sys.executable,
        "-m",
        "tests.faults.relay",
        listen,
        target,
        f"--delay-ms={delay_ms:g}",
    ]
    if namespace is not None:
        command = namespace.exec_args(*command)
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"relay {listen} -> {target} did not start: {line}")
        yield listen
    finally:
        process.kill()
        process.wait(timeout=10)
