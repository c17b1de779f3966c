"""The image's HEALTHCHECK: GET /ready of the `callvault serve` running in this container —
200 only when the database answers at head, the default store is writable and the keys open
the data (docs/deploy.md); /health would only say that the process answers.

It finds the server's address in its command line (`--host`, `--port`, as given to
`podman run … callvault serve …`), so a changed port needs no second setting. A container
running `callvault worker` is checked on its metrics port when it has one (`--metrics-port`
or CALLVAULT_METRICS_PORT: GET /metrics), else it is healthy while the worker process runs.
Exit 0 healthy, 1 unhealthy (the HEALTHCHECK contract). Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

PATH = "/ready"
TIMEOUT_SECS = 4.0


def callvault_commands() -> list[list[str]]:
    """The argument lists of the `callvault` processes in this container."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = [a.decode() for a in cmdline.read_bytes().split(b"\0") if a]
        except OSError:  # gone meanwhile
            continue
        for i, arg in enumerate(args[:3]):  # `callvault …` or `python …/callvault …`
            if Path(arg).name == "callvault":
                found.append(args[i + 1 :])
                break
    return found


def option(args: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def health_url(args: list[str]) -> str:
    host = option(args, "--host", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{option(args, '--port', '8000')}{PATH}"


def worker_metrics_url(args: list[str], environ: dict[str, str]) -> str | None:
    """The worker's own /metrics (its --metrics-port, else CALLVAULT_METRICS_PORT), or None."""
    port = option(args, "--metrics-port", environ.get("CALLVAULT_METRICS_PORT", ""))
    if not port:
        return None
    host = option(args, "--metrics-host", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def main() -> int:
    commands = callvault_commands()
    servers = [args for args in commands if args[:1] == ["serve"]]
    if servers:
        return check(health_url(servers[0]))
    workers = [args for args in commands if args[:1] == ["worker"]]
    if not workers:
        print("no callvault serve or worker running")
        return 1
    url = worker_metrics_url(workers[0], dict(os.environ))
    if url is None:
        print("worker running")
        return 0
    return check(url)


def check(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECS) as response:  # noqa: S310
            ok = response.status == 200
    except OSError as exc:
        print(f"{url}: {exc}")
        return 1
    print(f"{url}: {'ok' if ok else 'not ok'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
