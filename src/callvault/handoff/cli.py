"""`callvault handoff rtpengine|watch`: a process next to the media server (DESIGN.md, pinned).

Runs until SIGTERM/SIGINT (finishing what it is posting; an interrupted item is posted again
on the next start), or with `--once` takes what is ready and exits: 0 when everything was
stored or parked in failed/, 1 when some items wait for a server that did not take them (they
stay in the spool). CALLVAULT_HANDOFF_CONCURRENCY (default 2) bounds the calls in flight,
CALLVAULT_HANDOFF_POLL_SECONDS (default 1) is how often the spool is looked at.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import typer

from callvault.config import load_client_settings
from callvault.handoff import spool, watch
from callvault.handoff.runner import Runner, SpoolItem
from callvault.logs import configure_logging
from callvault.recordings.cli import fail, ingest_token

app = typer.Typer(
    help="Hand finished recordings from a media server's spool to callvault.",
    no_args_is_help=True,
)

SERVER_HELP = "callvault's URL. Default: $CALLVAULT_SERVER, else http://127.0.0.1:8000."
TOKEN_HELP = "Ingest token. Default: $CALLVAULT_INGEST_TOKEN, else the data dir's token file."
ONCE_HELP = "Take what is ready now, then exit (cron, tests)."


def _positive(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise fail(f"{name} must be a number") from None
    if value <= 0:
        raise fail(f"{name} must be positive")
    return value


def _run(
    directory: Path,
    failed: Path,
    scan: Callable[[], Iterable[SpoolItem]],
    server: str | None,
    token: str | None,
    once: bool,
) -> None:
    configure_logging()
    if not directory.is_dir():
        raise fail(f"no directory at {directory}")
    secret = ingest_token(token)
    if not secret:
        raise fail("no ingest token: pass --token or set CALLVAULT_INGEST_TOKEN")
    client = load_client_settings()
    runner = Runner(
        server=server or client.server,
        token=secret,
        failed_dir=failed,
        scan=scan,
        concurrency=int(_positive("CALLVAULT_HANDOFF_CONCURRENCY", client.handoff_concurrency)),
        poll_seconds=_positive("CALLVAULT_HANDOFF_POLL_SECONDS", client.handoff_poll_seconds),
    )
    if once:
        stats = runner.run_once()
        typer.echo(
            f"stored {stats.stored}, already stored {stats.repeats}, failed {stats.failed}, "
            f"waiting {stats.waiting}"
        )
        if stats.waiting:
            raise typer.Exit(1)
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner.run_forever(stop)


@app.command("rtpengine")
def rtpengine(
    spool_dir: Path = typer.Option(
        ..., "--spool-dir", help="rtpengine's --recording-dir (pcap method)."
    ),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    once: bool = typer.Option(False, "--once", help=ONCE_HELP),
) -> None:
    """rtpengine's pcap recording spool: each finished call becomes a recording."""
    _run(
        spool_dir,
        spool.failed_dir(spool_dir),
        lambda: spool.scan_spool(spool_dir),
        server,
        token,
        once,
    )


@app.command("watch")
def watch_command(
    directory: Path = typer.Argument(..., help="Where NAME.wav|NAME.mp3 + NAME.json arrive."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
    once: bool = typer.Option(False, "--once", help=ONCE_HELP),
) -> None:
    """Any media server: a finished NAME.wav or NAME.mp3 with its NAME.json (ingest metadata)."""
    _run(
        directory,
        watch.failed_dir(directory),
        lambda: watch.scan_watch_dir(directory),
        server,
        token,
        once,
    )
